"""Shared fixtures. GL contexts for tests are created here and nowhere else.

* ``gl`` (session): one owned EGL context (llvmpipe here, a real GPU where there is one), made
  current on the test thread, for tests that drive the pipeline directly.
* ``gl_clean`` : asserts ``GL_NO_ERROR`` before and after a test that uses ``gl``.
* ``processors``: a cache of ``SegmentationPostprocessor`` per activation, closed at the end.
* ``new_pipeline`` / ``new_processor``: pipelines (on ``gl``) / processors made by one test and
  released / closed after it.
* ``parity``: collects worst-case figures of the parity tests, printed in the terminal summary.
"""

from __future__ import annotations

from collections import defaultdict

import moderngl
import numpy as np
import pytest

import gpu_seg
from gpu_seg.gl import egl
from gpu_seg.gl.compute import compute_available
from gpu_seg.gl.pipeline import GLPipeline
from gpu_seg.gl.programs import ProgramCache

_PARITY: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))


class GLFixture:
    """A live context with a program cache and a pipeline on the test thread."""

    def __init__(self) -> None:
        self.egl_context = egl.create_context(egl.open_display())
        self.egl_context.make_current()
        self.ctx = moderngl.create_context(standalone=True, require=330, context=self.egl_context.loader())
        self.glsl = 400 if self.ctx.version_code >= 400 else 330
        self.programs = ProgramCache(self.ctx, 1, self.glsl, lambda: None)
        self.pipeline = GLPipeline(self.ctx, self.programs)

    def pipeline_with_limit(self, max_texture_size: int) -> GLPipeline:
        """A separate pipeline (own programs) that believes the texture limit is smaller."""
        programs = ProgramCache(self.ctx, 1, self.glsl, lambda: None)
        return GLPipeline(self.ctx, programs, max_texture_size=max_texture_size)

    def close(self) -> None:
        self.pipeline.release()
        self.ctx.release()


@pytest.fixture(scope="session")
def _gl_session():
    fixture = GLFixture()
    fixture.egl_context.release_current()
    yield fixture
    fixture.egl_context.make_current()
    fixture.close()
    fixture.egl_context.release_current()


@pytest.fixture
def gl(_gl_session):
    """The session's context, current on the test thread for this test only: a context left current
    would meet the application windows (GLX) that later tests make current on the same thread."""
    _gl_session.egl_context.make_current()
    yield _gl_session
    _gl_session.egl_context.release_current()


@pytest.fixture
def gl_clean(gl):
    assert gl.ctx.error == "GL_NO_ERROR"
    yield gl
    assert gl.ctx.error == "GL_NO_ERROR"


@pytest.fixture(scope="session")
def processors():
    cache: dict[tuple, gpu_seg.SegmentationPostprocessor] = {}

    def get(activation: str, backend: str = "gl") -> gpu_seg.SegmentationPostprocessor:
        key = (activation, backend)
        if key not in cache:
            cache[key] = gpu_seg.SegmentationPostprocessor(activation, backend=backend)
        return cache[key]

    yield get
    for pp in cache.values():
        pp.close()


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % (2**32))


class ParityLog:
    def record(
        self, pair: str, confidence_error: float, mismatches: int, near_ties: int, pixels: int
    ) -> None:
        entry = _PARITY[pair]
        entry["cases"] += 1
        entry["worst_confidence_error"] = max(entry["worst_confidence_error"], confidence_error)
        entry["category_mismatches"] += mismatches
        entry["near_tie_mismatches"] += near_ties
        entry["category_pixels"] += pixels


@pytest.fixture(scope="session")
def parity() -> ParityLog:
    return ParityLog()


def pytest_terminal_summary(terminalreporter):
    if not _PARITY:
        return
    terminalreporter.section("parity figures")
    for pair, entry in sorted(_PARITY.items()):
        cases, worst = int(entry["cases"]), entry["worst_confidence_error"]
        mismatches, pixels = int(entry["category_mismatches"]), int(entry["category_pixels"])
        terminalreporter.write_line(
            f"{pair}: {cases} cases, worst confidence |diff| {worst:.3g}, category mismatches "
            f"{mismatches} of {pixels} pixels (all near ties: {int(entry['near_tie_mismatches'])})"
        )


@pytest.fixture
def new_processor():
    """Make processors for one test, closed after it: ``make(activation="softmax", **options)``.

    GL stays in use under ``backend="auto"`` on llvmpipe (``software_renderer="gl"``) unless a
    test says otherwise: these tests exercise the GL path and its recovery, not the speed choice.
    """
    made: list[gpu_seg.SegmentationPostprocessor] = []

    def make(activation: str = "softmax", **options) -> gpu_seg.SegmentationPostprocessor:
        options.setdefault("software_renderer", "gl")
        processor = gpu_seg.SegmentationPostprocessor(activation, **options)
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.close()


@pytest.fixture
def new_pipeline(gl_clean):
    """Make GL pipelines on the test's context, released after it: ``make(passes, **options)``
    (``GLPipeline`` options). ``passes="compute"`` skips without GL 4.3 compute shaders and turns
    llvmpipe's category shortcut off (a fragment-pass technique: the compute category pass runs)."""
    made: list[GLPipeline] = []

    def make(passes: str = "fragment", **options) -> GLPipeline:
        if passes == "compute" and not compute_available(gl_clean.ctx):
            pytest.skip(f"no GL 4.3 compute shaders (GL {gl_clean.ctx.version_code})")
        programs = ProgramCache(gl_clean.ctx, 1, gl_clean.glsl, lambda: None)
        pipeline = GLPipeline(gl_clean.ctx, programs, passes=passes, **options)
        if passes == "compute":
            pipeline.category_shortcut = False
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.release()
