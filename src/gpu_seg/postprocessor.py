"""The public processor: validates, picks a backend, survives context losses, returns masks."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import moderngl
import numpy as np

from . import reference
from .errors import ClosedError, ContextLostError, GLUnavailableError, InputError, ShaderBuildError
from .frame import ConfidenceFormat, Frame
from .gl.pipeline import GLPipeline, TensorLayout
from .gl.programs import BuildCounters, ProgramCache
from .gl.session import AttachedSession, GLError, GLSession, OwnedSession
from .gl.worker import GLThread
from .inputs import (
    CPU_MAX_OUTPUT_DIM,
    as_hwc_float32,
    check_output_array,
    check_requested_outputs,
    parse_activation,
    parse_channels,
    parse_output_size,
)
from .resilience import RecoveryPolicy
from .types import Activation, Result

__all__ = ["Event", "SegmentationPostprocessor"]

log = logging.getLogger("gpu_seg")

BackendChoice = Literal["auto", "gl", "cpu"]
EVENT_KINDS = ("context_lost", "rebuilt", "fallback", "gpu_restored", "shader_error", "gl_error")


@dataclass(frozen=True)
class Event:
    """Something that happened to the GL side of a processor.

    Attributes:
        kind: one of ``context_lost``, ``rebuilt``, ``fallback``, ``gpu_restored``,
            ``shader_error``, ``gl_error``.
        time: wall-clock time (``time.time()``).
        reason: what was detected, in words.
        generation: the context generation concerned.
    """

    kind: str
    time: float
    reason: str
    generation: int


@dataclass
class _Faults:
    """Pending injected faults (see :mod:`gpu_seg.testing`)."""

    fail_links: int = 0
    fail_creations: int = 0

    def take_link_failure(self) -> str | None:
        if self.fail_links > 0:
            self.fail_links -= 1
            return "injected link failure (lost context)"
        return None


@dataclass
class _Generation:
    """The GL side of one context generation: context, programs and pooled objects."""

    session: GLSession
    pipeline: GLPipeline


@dataclass
class _Counters:
    frames: int = 0
    gl_frames: int = 0
    cpu_frames: int = 0
    context_losses: int = 0
    rebuilds: int = 0
    builds: BuildCounters = field(default_factory=BuildCounters)


class SegmentationPostprocessor:
    """MediaPipe ``ImageSegmenter`` post-processing on the GPU, with recovery and CPU fallback.

    Args:
        activation: ``"none"``, ``"sigmoid"``, ``"softmax"`` or an :class:`Activation`.
        output_confidence_masks: return float32 ``(C, height, width)`` masks.
        output_category_mask: return the uint8 ``(height, width)`` mask.
        backend: ``"auto"`` (GL; the CPU when GL cannot start or keeps failing), ``"gl"`` (GL or
            raise :class:`~gpu_seg.errors.GLUnavailableError` / ``ContextLostError``) or ``"cpu"``.
        context: ``None`` to create and own a headless EGL context; a ``moderngl.Context`` or
            ``"current"`` to work inside the application's context (see :meth:`attach`).
        on_event: called with an :class:`Event` on context loss, rebuild, fallback, GPU restored,
            shader error. It runs on the thread that called ``process()``.
        policy: loss budget, backoff and re-probe settings (:class:`~gpu_seg.resilience.RecoveryPolicy`).
        device_index: EGL device for the owned context (default: env ``GPU_SEG_EGL_DEVICE`` or 0).
        gl_timeout: seconds a frame may take on the GL thread before the driver is considered hung.
        confidence_dtype: ``"float32"`` (default), ``"float16"`` (round to nearest even) or
            ``"uint8"`` (``floor(v * 255 + 0.5)`` clamped to [0, 255], NaN -> 0). The values are
            quantised after the resize; MediaPipe's own uint8 option (0.10.32+) quantises before
            it, so its uint8 masks can differ by one step.
        confidence_channels: indices of the confidence masks to compute and return, in that order
            (default: every channel). The activation still uses every channel.

    Convention:
        ``tensor`` is float32 ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``, channel-interleaved
        (HWC), row 0 = top; float16/float64 are converted. ``output_size`` is ``(width, height)``,
        defaulting to the tensor size. Results are MediaPipe's CPU results (see
        :mod:`gpu_seg.reference`): confidence masks use OpenCV half-pixel bilinear resizing of the
        activated values; the category mask uses align-corners interpolation of the raw logits,
        ties to the lowest index; one-class models give 0 (foreground, value > 0.5) / 255.

    Threads: ``process()`` may be called from any thread; frames run one at a time. An owned
    context lives on a dedicated GL thread that does all its GL work; an attached context is
    used on the thread that attached it, which must have it current.
    """

    def __init__(
        self,
        activation: Activation | str = Activation.NONE,
        output_confidence_masks: bool = True,
        output_category_mask: bool = True,
        backend: BackendChoice = "auto",
        *,
        context: moderngl.Context | Literal["current"] | None = None,
        on_event: Callable[[Event], None] | None = None,
        policy: RecoveryPolicy | None = None,
        device_index: int | None = None,
        gl_timeout: float | None = 60.0,
        confidence_dtype: str = "float32",
        confidence_channels: Sequence[int] | None = None,
    ) -> None:
        self.activation = parse_activation(activation)
        self.confidence_format = ConfidenceFormat.parse(confidence_dtype)
        self.confidence_dtype = self.confidence_format.dtype
        if confidence_channels is not None:
            parse_channels(confidence_channels, 1 << 30)  # shape and type now; range per frame
        self.confidence_channels = None if confidence_channels is None else tuple(confidence_channels)
        check_requested_outputs(bool(output_confidence_masks), bool(output_category_mask))
        if backend not in ("auto", "gl", "cpu"):
            raise InputError("backend", f"unknown backend {backend!r}; expected 'auto', 'gl' or 'cpu'")
        if context is not None and context != "current" and not isinstance(context, moderngl.Context):
            raise InputError("context", "expected None, 'current' or a moderngl.Context")
        self.output_confidence_masks = bool(output_confidence_masks)
        self.output_category_mask = bool(output_category_mask)
        self.backend: BackendChoice = backend
        self.policy = policy if policy is not None else RecoveryPolicy()
        self.on_event = on_event
        self._device_index = device_index
        self._gl_timeout = gl_timeout
        self._attached_mode = context is not None
        self._pending_attach: moderngl.Context | Literal["current"] | None = context
        self._lock = threading.RLock()
        self._closed = False
        self._gl: _Generation | None = None
        self._gl_thread: GLThread | None = None  # kept across generations unless it hangs
        self._generation = 0
        self._counters = _Counters()
        self._faults = _Faults()
        self._gl_max_dim: int | None = None
        self._needs_rebuild_event = False
        if backend != "cpu":
            self._start_gl()

    # ----------------------------------------------------------------------------- public
    def process(
        self,
        tensor: np.ndarray,
        output_size: tuple[int, int] | None = None,
        *,
        confidence_out: np.ndarray | None = None,
        category_out: np.ndarray | None = None,
    ) -> Result:
        """Masks for one model output.

        Args:
            tensor: float32 ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)`` logits (HWC, row 0 = top).
            output_size: ``(width, height)``; defaults to the tensor size.
            confidence_out: optional preallocated float32 ``(C, height, width)`` C-contiguous array
                to write the confidence masks into (returned in the result).
            category_out: optional preallocated uint8 ``(height, width)`` array for the category mask.

        Returns:
            A :class:`Result`; its arrays belong to the caller.

        Raises:
            InputError: bad tensor, size or output array (a ``ValueError``).
            ClosedError: the processor was closed.
            GLUnavailableError, ContextLostError, ShaderBuildError: only with ``backend="gl"``.
        """
        self._check_open()
        tensor = as_hwc_float32(tensor)
        max_dim = self._gl_max_dim if (self.backend != "cpu" and self._gl_max_dim) else CPU_MAX_OUTPUT_DIM
        width, height = parse_output_size(output_size, tensor.shape[:2], max_dim)
        if self.backend != "cpu" and self._gl_max_dim:
            TensorLayout.for_tensor(*tensor.shape, self._gl_max_dim)  # too big for GL: InputError now
        selected = parse_channels(self.confidence_channels, tensor.shape[2])
        confidence = (
            check_output_array(
                confidence_out, "confidence_out", (len(selected), height, width), self.confidence_dtype
            )
            if self.output_confidence_masks
            else None
        )
        category = (
            check_output_array(category_out, "category_out", (height, width), np.dtype(np.uint8))
            if self.output_category_mask
            else None
        )
        with self._lock:
            self._check_open()
            self._counters.frames += 1
            if self.backend != "cpu" and self._gl_frame(tensor, width, height, confidence, category):
                self._counters.gl_frames += 1
                return Result(confidence, category, "gl")
            self._cpu_frame(tensor, width, height, confidence, category)
            self._counters.cpu_frames += 1
            return Result(confidence, category, "cpu")

    __call__ = process

    def attach(self, context: moderngl.Context | Literal["current"] = "current") -> None:
        """Work inside an application-owned context from now on (a new generation).

        Call it with the new context current, on the thread that will call ``process()``, after
        the application recreated its context (for example a new window after the old one was
        destroyed). The previous generation's objects are dropped without GL calls if its context
        is gone, or released if it is still alive and current.
        """
        self._check_open()
        with self._lock:
            self._attached_mode = True
            self._drop_generation(release=True)
            self._pending_attach = context
            self._start_gl()
            if self._gl is not None and self._generation > 1:
                self._counters.rebuilds += 1
                self._emit("rebuilt", f"attached a new application context (generation {self._generation})")

    @property
    def stats(self) -> Mapping[str, object]:
        """Counters since creation (a snapshot)."""
        c = self._counters
        return {
            "frames": c.frames,
            "gl_frames": c.gl_frames,
            "cpu_frames": c.cpu_frames,
            "context_losses": c.context_losses,
            "rebuilds": c.rebuilds,
            "program_builds": c.builds.program_builds,
            "link_failures": c.builds.link_failures,
            "fallback_active": self.policy.fallback_active,
            "generation": self._generation,
            "live_gl_objects": self.live_gl_objects(),
        }

    @property
    def context_info(self):
        """The current context's :class:`~gpu_seg.gl.session.ContextInfo`, or None without GL."""
        return self._gl.session.info if self._gl else None

    def live_gl_objects(self) -> int:
        """GL objects held now: the context plus textures, framebuffers, vertex arrays, programs."""
        gl = self._gl
        return 0 if gl is None else 1 + gl.pipeline.live_objects()

    def close(self) -> None:
        """Release every GL object and the owned context. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drop_generation(release=True)
            if self._gl_thread is not None:
                self._gl_thread.stop()
                self._gl_thread = None

    def __enter__(self) -> SegmentationPostprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("cpu fallback" if self.policy.fallback_active else "ready")
        return (
            f"<SegmentationPostprocessor activation={self.activation.value} backend={self.backend} "
            f"generation={self._generation} {state}>"
        )

    # ----------------------------------------------------------------------------- GL lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this SegmentationPostprocessor was closed")

    def _emit(self, kind: str, reason: str) -> None:
        event = Event(kind, time.time(), reason, self._generation)
        level = logging.INFO if kind in ("rebuilt", "gpu_restored") else logging.WARNING
        log.log(level, "gpu_seg %s (generation %d): %s", kind, self._generation, reason)
        if self.on_event is not None:
            self.on_event(event)

    def _create_generation(self) -> _Generation:
        """The one rebuild path: a context, a program cache and a pipeline for a new generation."""
        if self._faults.fail_creations > 0:
            self._faults.fail_creations -= 1
            raise GLUnavailableError("injected context-creation failure")
        generation = self._generation + 1
        if self._attached_mode:
            pending = self._pending_attach
            if pending is None:
                raise ContextLostError(
                    "the application's context was lost; attach a new one with attach()",
                    reason="no context attached",
                )
            context: GLSession = AttachedSession(generation, None if pending == "current" else pending)
            self._pending_attach = None
        else:
            if self._gl_thread is None or not self._gl_thread.usable:
                self._gl_thread = GLThread("gpu_seg-gl")
            context = OwnedSession.create(
                generation, self._device_index, timeout=self._gl_timeout, thread=self._gl_thread
            )
        self._generation = generation
        programs = ProgramCache(
            context.mgl,
            generation,
            context.info.glsl_version,
            context.check,
            self._counters.builds,
            self._faults.take_link_failure,
        )
        try:
            pipeline = context.run(lambda: GLPipeline(context.mgl, programs))
        except BaseException:
            context.abandon()
            raise
        self._gl_max_dim = pipeline.limits.max_texture_size
        return _Generation(context, pipeline)

    def _start_gl(self) -> None:
        try:
            self._gl = self._create_generation()
        except (GLUnavailableError, ContextLostError) as exc:
            if self.backend == "gl":
                raise
            self._enter_fallback(f"GL unavailable: {exc}")

    def _drop_generation(self, release: bool) -> None:
        gl, self._gl = self._gl, None
        if gl is None:
            return
        if release:
            try:
                gl.session.close(release=gl.pipeline.release)
                return
            except Exception as exc:  # a dying context: fall through to abandon
                log.debug("release of generation %d failed: %s", gl.session.generation, exc)
        gl.pipeline.abandon()
        gl.session.abandon()

    def _enter_fallback(self, reason: str) -> None:
        if not self.policy.fallback_active:
            self.policy.enter_fallback(reason)
            self._emit("fallback", reason)
        else:
            self.policy.probe_failed()

    # ----------------------------------------------------------------------------- frames
    def _cpu_frame(
        self,
        tensor: np.ndarray,
        width: int,
        height: int,
        confidence: np.ndarray | None,
        category: np.ndarray | None,
    ) -> None:
        if confidence is not None:
            reference.confidence_masks(
                tensor,
                self.activation,
                (width, height),
                out=confidence,
                dtype=self.confidence_format,
                channels=self.confidence_channels,
            )
        if category is not None:
            reference.category_mask(tensor, self.activation, (width, height), out=category)

    def _gl_frame(
        self,
        tensor: np.ndarray,
        width: int,
        height: int,
        confidence: np.ndarray | None,
        category: np.ndarray | None,
    ) -> bool:
        """Run the frame on GL; returns False when it must go to the CPU (auto backend only)."""
        probing = self.policy.fallback_active
        if probing and not self.policy.probe_due():
            return False
        if self._gl is None and self._attached_mode and self._pending_attach is None:
            if self.backend == "gl":
                raise ContextLostError(
                    "the application's context was lost; attach a new one with attach()",
                    reason="no context attached",
                )
            return False
        while True:
            try:
                if self._gl is None:
                    self._gl = self._create_generation()
                    self._needs_rebuild_event = self._needs_rebuild_event or not probing
                gl = self._gl
                frame = Frame(
                    tensor,
                    width,
                    height,
                    self.activation,
                    None if confidence is None else parse_channels(self.confidence_channels, tensor.shape[2]),
                    category is not None,
                    self.confidence_format,
                )
                gl.session.run(functools.partial(gl.pipeline.process, frame, confidence, category))
            except ContextLostError as exc:
                if not self._handle_loss(exc):
                    return False
                continue
            except GLUnavailableError as exc:
                if self.backend == "gl":
                    raise
                self._enter_fallback(f"GL unavailable: {exc}")
                return False
            except ShaderBuildError as exc:
                self._emit("shader_error", str(exc).splitlines()[0])
                if self.backend == "gl":
                    raise
                self._enter_fallback(f"shader error: {exc.program}")
                return False
            except GLError as exc:
                self._emit("gl_error", str(exc))
                if self.backend == "gl":
                    raise
                return False
            self._after_gl_success(probing)
            return True

    def _after_gl_success(self, probing: bool) -> None:
        if probing:
            self.policy.leave_fallback()
            self._needs_rebuild_event = False
            self._emit("gpu_restored", "a GL frame succeeded after the fallback")
        elif self._needs_rebuild_event:
            self._needs_rebuild_event = False
            self._counters.rebuilds += 1
            self._emit("rebuilt", f"recomputed on context generation {self._generation}")

    def _handle_loss(self, exc: ContextLostError) -> bool:
        """Record a loss and drop the dead generation; returns whether to retry on GL now."""
        self._counters.context_losses += 1
        self._emit("context_lost", exc.reason or str(exc))
        self._drop_generation(release=False)
        if self.policy.fallback_active:  # a failed re-probe
            self.policy.probe_failed()
            return False
        may_rebuild, delay = self.policy.record_loss()
        if self._attached_mode and self._pending_attach is None:
            # Only the application can provide a new context: report, and wait for attach().
            if self.backend == "gl":
                raise exc
            return False
        if not may_rebuild:
            if self.backend == "gl":
                raise ContextLostError(
                    f"context lost and the loss budget is exhausted: {exc}", reason=exc.reason
                ) from exc
            self._enter_fallback(f"loss budget exhausted ({exc.reason})")
            return False
        if delay:
            time.sleep(delay)
        return True
