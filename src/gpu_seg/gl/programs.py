"""GLSL sources and the program cache.

Shaders live as ``.glsl`` files in the ``gpu_seg.shaders`` package (the repository's
``shaders/`` folder) and are loaded with :mod:`importlib.resources`. A small, strict template
step runs before compilation:

* ``#include "name.glsl"`` on a line of its own is replaced by that file (each file once);
* ``{{NAME}}`` is replaced by the value of ``NAME`` in the definition's parameters; a
  placeholder without a value, or a value that no placeholder uses, is an error.

:class:`ProgramCache` builds each program once per context generation, keyed by its definition
(shader files, parameters, GLSL version); past its capacity the least recently used program is
released. A compute definition (:meth:`ProgramDefinition.compute_of`) is built the same way, as a
``moderngl.ComputeShader`` with ``#version 430`` (:mod:`.compute`). Every build checks compile and
link status. A failure is classified: on a lost context it is a
:class:`~gpu_seg.errors.ContextLostError`; on a healthy one a
:class:`~gpu_seg.errors.ShaderBuildError` carrying the driver log and the line-numbered source, and
the same definition is not built again (the failure is kept in the counters shared by all
generations of a processor). Nothing here prints: failures go to the ``gpu_seg`` logger (with the
source when ``GPU_SEG_PRINT_GLSL_ON_ERROR`` is set).
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import moderngl
import numpy as np

from ..errors import ContextLostError, GpuSegError, ShaderBuildError

__all__ = [
    "ProgramCache",
    "ProgramDefinition",
    "bind_inputs",
    "line_numbered",
    "load_source",
    "render_source",
    "set_uniform",
]

log = logging.getLogger("gpu_seg")

_INCLUDE = re.compile(r'^[ \t]*#include[ \t]+"([A-Za-z0-9_.]+)"[ \t]*$', re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(GpuSegError, ValueError):
    """A shader template could not be rendered (unknown include, missing or unused parameter)."""


@functools.cache
def load_source(name: str) -> str:
    """Text of ``shaders/<name>`` from the installed package."""
    resource = importlib.resources.files("gpu_seg.shaders").joinpath(name)
    if not resource.is_file():
        raise TemplateError(f"shader file {name!r} not found in gpu_seg.shaders")
    return resource.read_text(encoding="utf-8")


def _expand_includes(name: str, seen: set[str]) -> str:
    if name in seen:
        return ""
    seen.add(name)
    return _INCLUDE.sub(lambda m: _expand_includes(m.group(1), seen), load_source(name))


def render_source(name: str, params: Mapping[str, object]) -> str:
    """Expand includes and placeholders of ``shaders/<name>``; strict about names."""
    text = _expand_includes(name, set())
    used: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in params:
            raise TemplateError(f"{name}: placeholder {{{{{key}}}}} has no value")
        used.add(key)
        value = params[key]
        return str(int(value)) if isinstance(value, bool) else str(value)

    text = _PLACEHOLDER.sub(substitute, text)
    unused = sorted(set(params) - used)
    if unused:
        raise TemplateError(f"{name}: parameters {unused} are not used by the template")
    return text


def line_numbered(source: str) -> str:
    """``source`` with 1-based line numbers, as drivers report them."""
    return "\n".join(f"{i:4d}| {line}" for i, line in enumerate(source.splitlines(), 1))


def set_uniform(program: moderngl.Program | moderngl.ComputeShader, name: str, value: object) -> None:
    """Set uniform ``name`` unless the program already holds ``value`` (or the compiler dropped it).

    A program keeps its uniform values until it is relinked, and only gpu_seg sets the uniforms
    of its programs, so the last value set is remembered (in the program's ``extra``, which
    moderngl leaves to its users) and an unchanged value costs no GL call. A tuple of one value
    sets an array of one element.
    """
    if isinstance(value, (list, np.ndarray)):
        value = tuple(np.asarray(value).tolist())  # compared by value, never by a mutable object
    known = program.extra
    if known is None:
        known = program.extra = {}
    if name in known and type(known[name]) is type(value) and known[name] == value:
        return
    uniform = program.get(name, None)
    if uniform is not None:
        if isinstance(value, tuple) and uniform.dimension == 1 and uniform.array_length == 1:
            uniform.value = value[0]  # an array of one element is set like a scalar
        else:
            uniform.value = value
    known[name] = value


def bind_inputs(
    program: moderngl.Program | moderngl.ComputeShader, textures: dict, uniforms: dict | None = None
) -> None:
    """Bind ``textures`` (uniform name -> texture) to units 0, 1, ... and set ``uniforms``
    (:func:`set_uniform`); names the compiled program dropped are skipped."""
    for unit, (name, texture) in enumerate(textures.items()):
        texture.use(location=unit)
        set_uniform(program, name, unit)
    for name, value in (uniforms or {}).items():
        set_uniform(program, name, value)


@dataclass(frozen=True)
class ProgramDefinition:
    """What a program is made of; its hash is the cache key (with the GLSL version)."""

    vertex: str
    fragment: str  # the compute shader of a compute program
    params: tuple[tuple[str, object], ...] = ()
    compute: bool = False

    @classmethod
    def of(cls, vertex: str, fragment: str, **params: object) -> ProgramDefinition:
        return cls(vertex, fragment, tuple(sorted(params.items())))

    @classmethod
    def compute_of(cls, shader: str, **params: object) -> ProgramDefinition:
        """A compute program (``moderngl.ComputeShader``, GLSL :data:`COMPUTE_GLSL_VERSION` or later)."""
        return cls("", shader, tuple(sorted(params.items())), compute=True)

    @property
    def name(self) -> str:
        return self.fragment.removesuffix(".frag.glsl").removesuffix(".comp.glsl")


@dataclass
class BuildCounters:
    """Counts kept by the cache (surfaced in ``SegmentationPostprocessor.stats``).

    ``failed_definitions`` remembers at most :data:`MAX_FAILED_DEFINITIONS` shaders that failed to
    build on a healthy context (the oldest is forgotten first).
    """

    program_builds: int = 0
    link_failures: int = 0
    program_evictions: int = 0
    failed_definitions: OrderedDict[ProgramDefinition, ShaderBuildError] = field(default_factory=OrderedDict)

    def remember_failure(self, definition: ProgramDefinition, error: ShaderBuildError) -> None:
        self.failed_definitions[definition] = error
        while len(self.failed_definitions) > MAX_FAILED_DEFINITIONS:
            self.failed_definitions.popitem(last=False)


#: The ``#version`` of compute programs (GL 4.3 / ``ARB_compute_shader``), whatever the context's.
COMPUTE_GLSL_VERSION = 430

#: Broken shader definitions remembered (never rebuilt) per processor.
MAX_FAILED_DEFINITIONS = 64


@dataclass
class _Entry:
    program: moderngl.Program | moderngl.ComputeShader
    vertex_array: moderngl.VertexArray | None = None  # attribute-less, for full-screen passes


class ProgramCache:
    """Programs of one GL context generation, keyed by definition, least recently used evicted first.

    At most ``capacity`` programs are kept (default :data:`DEFAULT_CAPACITY`, more than the ten
    that one frame can use); each may carry the attribute-less vertex array that full-screen
    passes draw with (:meth:`vertex_array`), released with its program. Evictions are counted in
    ``counters.program_evictions``, and the callbacks registered with :meth:`on_evict` are told
    (a vertex array elsewhere that was made for an evicted program must be released too). A
    program is used right after :meth:`get` returns it, before the next :meth:`get`, so eviction
    never releases a program that a pass is about to draw with.

    Args:
        ctx: the moderngl context of this generation.
        generation: the context generation these programs belong to.
        glsl_version: the ``#version`` to compile with.
        is_context_lost: returns a reason string when the context is lost, else ``None``;
            asked whenever a build fails, to tell a lost context from a broken shader.
        counters: shared counters (kept across generations by the owner).
        fault_hook: called before each build; returning a string makes that build fail as a
            link failure on a lost context would (used by :mod:`gpu_seg.testing`).
        capacity: programs kept before the least recently used one is released.
    """

    #: Programs kept per generation.
    DEFAULT_CAPACITY = 48

    def __init__(
        self,
        ctx: moderngl.Context,
        generation: int,
        glsl_version: int,
        is_context_lost: Callable[[], str | None],
        counters: BuildCounters | None = None,
        fault_hook: Callable[[], str | None] | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.ctx = ctx
        self.generation = generation
        self.glsl_version = glsl_version
        self.capacity = capacity
        self._is_context_lost = is_context_lost
        self.counters = counters if counters is not None else BuildCounters()
        self._fault_hook = fault_hook
        self._entries: OrderedDict[ProgramDefinition, _Entry] = OrderedDict()
        self._evict_callbacks: list[Callable[[moderngl.Program], None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def live_objects(self) -> int:
        """GL objects held: programs and their vertex arrays."""
        return sum(1 + (entry.vertex_array is not None) for entry in list(self._entries.values()))

    def on_evict(self, callback: Callable[[moderngl.Program], None]) -> None:
        """Call ``callback(program)`` before an evicted program is released."""
        self._evict_callbacks.append(callback)

    def get(self, definition: ProgramDefinition) -> moderngl.Program | moderngl.ComputeShader:
        """The program for ``definition``, built on first use (a ``ComputeShader`` for a compute one)."""
        return self._entry(definition).program

    def vertex_array(self, definition: ProgramDefinition) -> tuple[moderngl.Program, moderngl.VertexArray]:
        """The program and an attribute-less vertex array for it (full-screen passes)."""
        entry = self._entry(definition)
        if entry.vertex_array is None:
            entry.vertex_array = self.ctx.vertex_array(entry.program, [])
        return entry.program, entry.vertex_array

    def _entry(self, definition: ProgramDefinition) -> _Entry:
        entry = self._entries.get(definition)
        if entry is not None:
            self._entries.move_to_end(definition)
            return entry
        failed = self.counters.failed_definitions.get(definition)
        if failed is not None:  # a shader that failed on a healthy context is not rebuilt, in any generation
            raise failed
        entry = _Entry(self._build(definition))
        self._entries[definition] = entry
        while len(self._entries) > self.capacity:
            _, evicted = self._entries.popitem(last=False)
            self.counters.program_evictions += 1
            for callback in self._evict_callbacks:
                callback(evicted.program)
            _release(evicted)
        return entry

    def _build(self, definition: ProgramDefinition) -> moderngl.Program | moderngl.ComputeShader:
        if definition.compute:
            version = max(self.glsl_version, COMPUTE_GLSL_VERSION)
            source = render_source(definition.fragment, dict(definition.params, GLSL_VERSION=version))
            return self._compile(definition, {"compute": source})
        params = dict(definition.params, GLSL_VERSION=self.glsl_version)
        vertex_params = _params_for(definition.vertex, params)
        fragment_params = _params_for(definition.fragment, params)
        unused = sorted(set(params) - set(vertex_params) - set(fragment_params))
        if unused:
            raise TemplateError(f"{definition.name}: parameters {unused} are used by no shader")
        sources = {
            "vertex": render_source(definition.vertex, vertex_params),
            "fragment": render_source(definition.fragment, fragment_params),
        }
        return self._compile(definition, sources)

    def _compile(
        self, definition: ProgramDefinition, sources: dict[str, str]
    ) -> moderngl.Program | moderngl.ComputeShader:
        """Compile and link ``sources`` (``vertex`` and ``fragment``, or ``compute``), errors classified."""
        self.counters.program_builds += 1
        injected = self._fault_hook() if self._fault_hook else None
        if injected:
            self.counters.link_failures += 1
            raise ContextLostError(f"building {definition.name!r}: {injected}", reason=injected)
        try:
            if "compute" in sources:
                return self.ctx.compute_shader(sources["compute"])
            return self.ctx.program(vertex_shader=sources["vertex"], fragment_shader=sources["fragment"])
        except moderngl.Error as exc:
            self.counters.link_failures += 1
            lost = self._is_context_lost()
            if lost:
                raise ContextLostError(
                    f"building {definition.name!r} failed on a lost context ({lost})", reason=lost
                ) from exc
            if "compute" in sources:
                failing = "compute"
            else:
                failing = "fragment" if "fragment" in str(exc).lower() else "vertex"
            error = ShaderBuildError(definition.name, str(exc), line_numbered(sources[failing]))
            self.counters.remember_failure(definition, error)
            log.error("shader build failed on a healthy context: %s", error)
            if _print_glsl_on_error():
                log.error("source of %s:\n%s", definition.name, error.source)
            raise error from exc

    def release(self) -> None:
        """Release every program and vertex array (the context must be alive and current)."""
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            _release(entry)

    def abandon(self) -> None:
        """Forget every program without GL calls (the context is gone)."""
        self._entries.clear()


def _release(entry: _Entry) -> None:
    if entry.vertex_array is not None:
        entry.vertex_array.release()
    entry.program.release()


def _params_for(name: str, params: Mapping[str, object]) -> dict[str, object]:
    """The subset of ``params`` that the template ``name`` (with its includes) uses."""
    wanted = set(_PLACEHOLDER.findall(_expand_includes(name, set())))
    return {k: v for k, v in params.items() if k in wanted}


def _print_glsl_on_error() -> bool:
    """``GPU_SEG_PRINT_GLSL_ON_ERROR`` is on: set, and not empty, ``0``, ``false``, ``no`` or ``off``."""
    value = os.environ.get("GPU_SEG_PRINT_GLSL_ON_ERROR", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")
