"""The public processor: validates, picks a backend, survives context losses, returns masks."""

from __future__ import annotations

import logging
import numbers
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import moderngl
import numpy as np

from . import forks
from .cpu.backend import CPUBackend
from .errors import ClosedError, GLUnavailableError, InputError
from .events import Event, EventKind, EventLog
from .frame import ConfidenceFormat, Frame
from .gl.egl.devices import env_device_index
from .gl.pipeline import TensorLayout
from .gl.session import driver_failure, released
from .gl.state import reset_state
from .idle import IdleWatch
from .inputs import (
    CPU_MAX_OUTPUT_DIM,
    check_backend,
    check_disjoint_outputs,
    check_output_array,
    check_output_bytes,
    check_requested_outputs,
    flag,
    make_frame,
    parse_activation,
    parse_channels,
    positive_int,
    seconds,
)
from .locks import ProcessorLock
from .recycled import DEFAULT_MAX_BYTES, RecycledArrays
from .resilience import RecoveryPolicy
from .results import MaskView, PendingFrame
from .speed_choice import Route, SpeedChoice, frame_key, is_software_renderer
from .supervisor import GLSupervisor, InFlight, Verdict
from .types import Activation, ProcessorStats, Result

if TYPE_CHECKING:
    from .cuda import CudaMasks
    from .cuda.interop import CudaBridge
    from .gl.session import ContextInfo
    from .gl.worker import GLThread
    from .resident import GLTensor, Lease, ResidentMasks

__all__ = ["Event", "EventKind", "MaskView", "PendingFrame", "SegmentationPostprocessor"]

log = logging.getLogger("gpu_seg")
T = TypeVar("T")

#: Most threads the fast CPU path may be given (``cpu_threads``); all are started with the processor.
MAX_CPU_THREADS = 1024

BackendChoice = Literal["auto", "gl", "cpu"]


def _check_context(context: object, expected: str) -> None:
    """``context`` of the constructor and :meth:`SegmentationPostprocessor.attach`."""
    if isinstance(context, str) and context == "current":
        return
    if not isinstance(context, moderngl.Context):
        raise InputError("context", expected)
    if released(context):
        raise InputError("context", "this moderngl.Context was released")


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
            shader error, GL error, trim. It runs on the thread whose call produced the event,
            after the processor's lock is released (it may call the processor); an exception it
            raises is logged and changes nothing else.
        policy: loss budget, backoff and re-probe settings (:class:`~gpu_seg.resilience.RecoveryPolicy`,
            immutable; one instance may be shared: each processor keeps its own state).
        device_index: EGL device for the owned context (default: env ``GPU_SEG_EGL_DEVICE`` or 0).
        gl_timeout: seconds a frame (or a :meth:`run_gl` function) may take on the GL thread before
            the driver is considered hung (a context loss); None: no limit.
        confidence_dtype: ``"float32"`` (default), ``"float16"`` (round to nearest even) or
            ``"uint8"`` (``floor(v * 255 + 0.5)`` clamped to [0, 255], NaN -> 0). The values are
            quantised after the resize; MediaPipe's own uint8 option (0.10.32+) quantises before
            it, so its uint8 masks can differ by one step.
        confidence_channels: indices of the confidence masks to compute and return, in that order
            (default: every channel). The activation still uses every channel.
        idle_release_after: seconds without frames after which pooled GL objects and the recycled
            result memory are released (:meth:`trim`); ``None`` (default) never releases them by
            itself. With an attached context only the result memory: the watch's thread may not
            use the application's context (call :meth:`trim` on its thread for the GL objects).
        idle_release_context: with ``idle_release_after``, release the owned context too (the
            next frame creates a new one, without counting a loss).
        software_renderer: with ``backend="auto"`` on a software rasteriser (llvmpipe, softpipe,
            SwiftShader: the "GPU" is the CPU), ``"fastest"`` (default) measures GL and the fast
            CPU path once per frame configuration and uses the faster (:mod:`gpu_seg.speed_choice`;
            ``result.backend`` and ``stats["speed_choice"]`` say which); ``"gl"`` always uses GL.
            Hardware GPUs always use GL.
        cpu_threads: threads of the fast CPU path (default: the CPUs this process may use; at most
            :data:`MAX_CPU_THREADS`).
        time_gpu: measure each GL frame's GPU time with a ``GL_TIME_ELAPSED`` query (upload,
            passes, start of the readback), reported as ``stats["last_gpu_ms"]``; a small cost.
            None for a frame whose answer cannot be its GPU time (longer than the frame took:
            llvmpipe's first query of each context).
        readback: how masks come back to host memory: ``"auto"`` (default: ``"direct"`` on
            software rasterisers, where it is fastest, ``"mapped"`` on GPUs), ``"direct"`` (one
            synchronous read per mask) or ``"mapped"`` (a ring of persistently mapped buffers,
            one fence per frame: needed for zero-copy views and overlapping frames in flight;
            ``GL_ARB_buffer_storage``). See :mod:`gpu_seg.gl.readback`.
        gl_passes: the form of the resize and category passes (identical results): ``"auto"``
            (default: ``"compute"`` where GL 4.3 compute shaders exist on a hardware GPU,
            ``"fragment"`` on software rasterisers, where it is faster), ``"fragment"`` or
            ``"compute"`` (needs GL 4.3 and the mapped readback, which ``readback="auto"`` then
            chooses; the category keeps the fragment pass while llvmpipe's shortcut is on). See
            :mod:`gpu_seg.gl.compute`.
        recycle_bytes: the most bytes of owned result arrays (1 MiB and larger) kept to be handed
            out again once the caller has dropped them and everything derived from them (see
            :mod:`gpu_seg.recycled`): a large fresh array costs a page fault and a zeroed page per
            4 KiB on first write, a third of a deeplab frame. Default 512 MiB; 0 makes every
            result a fresh ``np.empty``. :meth:`trim`, the idle release and :meth:`close` let go
            of the kept memory.

    Convention:
        ``tensor`` is float32 ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``, channel-interleaved
        (HWC), row 0 = top; float16/float64 are converted. ``output_size`` is ``(width, height)``,
        defaulting to the tensor size. Results are MediaPipe's CPU results (see
        :mod:`gpu_seg.reference`): confidence masks use OpenCV half-pixel bilinear resizing of the
        activated values; the category mask uses align-corners interpolation of the raw logits,
        ties to the lowest index; one-class models give 0 (foreground, value > 0.5) / 255.

    Memory: a GL frame never writes into ``confidence_out``/``category_out`` before it is known
    good; it computes into arrays of its own (fresh, or the recycled memory of dropped results) and
    copies them there after the context's health check.

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
        confidence_dtype: ConfidenceFormat | str | type | np.dtype = "float32",
        confidence_channels: Sequence[int] | None = None,
        idle_release_after: float | None = None,
        idle_release_context: bool = False,
        software_renderer: Literal["fastest", "gl"] = "fastest",
        cpu_threads: int | None = None,
        time_gpu: bool = False,
        readback: Literal["auto", "direct", "mapped"] = "auto",
        gl_passes: Literal["auto", "fragment", "compute"] = "auto",
        recycle_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.activation = parse_activation(activation)
        self.confidence_format = ConfidenceFormat.parse(confidence_dtype)
        if confidence_channels is not None:
            # shape and type now (an iterator is read once, here); range per frame
            confidence_channels = parse_channels(confidence_channels, 1 << 30)
        self.confidence_channels = confidence_channels
        output_confidence_masks = flag(output_confidence_masks, "output_confidence_masks")
        output_category_mask = flag(output_category_mask, "output_category_mask")
        time_gpu = flag(time_gpu, "time_gpu")
        idle_release_context = flag(idle_release_context, "idle_release_context")
        check_requested_outputs(output_confidence_masks, output_category_mask)
        check_backend(backend)
        if context is not None:
            _check_context(context, "expected None, 'current' or a moderngl.Context")
        if gl_timeout is not None:
            gl_timeout = seconds(gl_timeout, "gl_timeout")
        whole = isinstance(device_index, numbers.Integral) and not isinstance(device_index, bool)
        if device_index is not None and not (whole and device_index >= 0):
            raise InputError("device_index", f"{device_index!r} is not an EGL device number (an int >= 0)")
        if device_index is None and backend != "cpu" and context is None:  # an owned context's device
            try:
                env_device_index()  # a bad variable is a configuration error, not "no GPU"
            except ValueError as exc:
                raise InputError("device_index", f"None, so {exc}") from None
        if software_renderer not in ("fastest", "gl"):
            raise InputError("software_renderer", f"{software_renderer!r} is not 'fastest' or 'gl'")
        if cpu_threads is not None:
            cpu_threads = positive_int(cpu_threads, "cpu_threads")
            if cpu_threads > MAX_CPU_THREADS:  # each is a thread started now
                raise InputError("cpu_threads", f"{cpu_threads} is more than {MAX_CPU_THREADS}")
        if readback not in ("auto", "direct", "mapped"):
            raise InputError("readback", f"{readback!r} is not 'auto', 'direct' or 'mapped'")
        if gl_passes not in ("auto", "fragment", "compute"):
            raise InputError("gl_passes", f"{gl_passes!r} is not 'auto', 'fragment' or 'compute'")
        if gl_passes == "compute" and readback == "direct":
            raise InputError(
                "gl_passes",
                "'compute' needs the mapped readback (it reads their storage buffers); "
                "readback='direct' was given",
            )
        if isinstance(recycle_bytes, bool) or not isinstance(recycle_bytes, numbers.Integral):
            raise InputError("recycle_bytes", f"{recycle_bytes!r} is not a whole number of bytes")
        if recycle_bytes < 0:
            raise InputError("recycle_bytes", f"{recycle_bytes!r} is not a number of bytes >= 0")
        if policy is not None and not isinstance(policy, RecoveryPolicy):
            raise InputError("policy", f"expected a gpu_seg.RecoveryPolicy, got {type(policy).__name__}")
        if idle_release_after is not None:
            idle_release_after = seconds(idle_release_after, "idle_release_after")
        self.output_confidence_masks = bool(output_confidence_masks)
        self.output_category_mask = bool(output_category_mask)
        self.backend: BackendChoice = backend
        self.policy = policy if policy is not None else RecoveryPolicy()
        self._events = EventLog(_callback(on_event))
        self._closed = False
        self._close_done = False  # False after a close() cut short: the next one finishes it
        self._frames = self._gl_frames = self._cpu_frames = self._backoff_cpu_frames = 0
        #: What close() releases, and, for a processor collected without close(), its finalizer
        #: (which holds this dict, never the processor): the GL thread and context, the idle
        #: watch's thread, CUDA objects, the CPU pool's threads, kept memory.
        self._parts: dict[str, Any] = {}
        self._lock = ProcessorLock(_gl_thread_of(self._parts))  # refuses calls from inside run_gl
        self._supervisor: GLSupervisor | None = None
        self._idle = None
        self._cuda = None  # created by the first process_cuda()
        self._chosen_cpu_frames = 0
        self._last_geometry: tuple | None = None
        self._lease: Lease | None = None  # the lent results of the last resident/CUDA frame
        self._idle_release = (idle_release_after, idle_release_context)
        try:
            self._cpu = self._parts["cpu"] = CPUBackend(cpu_threads) if backend != "gl" else None
            self._arrays = RecycledArrays(int(recycle_bytes))  # owned results' memory, used again
            self._parts["arrays"] = self._arrays
            self._speed = (
                SpeedChoice()
                if backend == "auto" and software_renderer == "fastest" and self._cpu.kind == "fast"
                else None
            )
            if backend != "cpu":
                self._supervisor = self._parts["supervisor"] = GLSupervisor(
                    backend,
                    context,
                    self._events.queue,  # not the callback: see EventQueue
                    self.policy,
                    device_index,
                    gl_timeout,
                    bool(time_gpu),
                    readback,
                    gl_passes,
                    self._arrays,
                )
                self._supervisor.start()
            self._start_idle_watch()
            supervisor = self._supervisor
            if self._idle is not None and supervisor is not None and supervisor.generation is not None:
                self._idle.touch()  # the context made now counts from now: released if no frame comes
            self._finalizer = weakref.finalize(self, _release, self._parts)
            self._finalizer.atexit = False  # at exit the process goes, and its GL with it
            gl_thread = _gl_thread_of(self._parts)  # not self: the registry must not keep it alive
            forks.renew_locks(self, "_lock", factory=lambda: ProcessorLock(gl_thread))
            forks.track(self)
        except BaseException:
            _release(self._parts)  # a GL thread made for nothing, the CPU pool's threads
            raise
        finally:
            self._events.deliver()

    @property
    def _cuda(self) -> CudaBridge | None:
        return self._parts.get("cuda")

    @_cuda.setter
    def _cuda(self, bridge: CudaBridge | None) -> None:
        self._parts["cuda"] = bridge

    @property
    def _idle(self) -> IdleWatch | None:
        return self._parts.get("idle")

    @_idle.setter
    def _idle(self, watch: IdleWatch | None) -> None:
        self._parts["idle"] = watch

    def _start_idle_watch(self) -> None:
        after, release_context = self._idle_release
        if after is None:
            return
        processor = weakref.ref(self)  # the watch's thread must not keep the processor alive

        def on_idle() -> None:
            alive = processor()
            if alive is not None:
                alive._trim_if_idle(release_context)

        self._idle = IdleWatch(float(after), on_idle)

    def _after_fork_in_child(self) -> None:
        """In a forked child (one thread; see :mod:`gpu_seg.forks`; its lock is new): a new idle watch;
        the parent's resident and CUDA results expire, its CUDA objects are kept, never used. The
        supervisor, the CPU backend and the recycled arrays renew themselves."""
        self._end_lease("the process was forked: the textures are the parent's")
        if self._cuda is not None:
            forks.park(self._cuda)  # CUDA state is the parent's: nothing may free it here
            self._cuda = None
        if self._idle is not None and not self._closed:
            self._start_idle_watch()

    @property
    def on_event(self) -> Callable[[Event], None] | None:
        """The event callback (may be replaced at any time)."""
        return self._events.callback

    @on_event.setter
    def on_event(self, callback: Callable[[Event], None] | None) -> None:
        self._events.callback = _callback(callback)

    @property
    def confidence_dtype(self) -> np.dtype:
        """The numpy dtype of the confidence masks."""
        return self.confidence_format.dtype

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
            confidence_out: optional preallocated ``(masks, height, width)`` C-contiguous array of
                the confidence dtype to write the confidence masks into (returned in the result).
            category_out: optional preallocated uint8 ``(height, width)`` array for the category mask.

        Returns:
            A :class:`Result`; its arrays belong to the caller.

        Raises:
            InputError: bad tensor, size or output array (a ``ValueError``).
            ClosedError: the processor was closed.
            GLUnavailableError, ContextLostError, ShaderBuildError, GLError: only with
                ``backend="gl"`` (GLError: a GL call failed on a healthy context).
        """
        self._check_open()
        frame, confidence_dst, category_dst = self._prepare(tensor, output_size, confidence_out, category_out)
        result = self._process_frame(frame, confidence_dst, category_dst)
        assert isinstance(result, Result)
        return result

    def process_view(self, tensor: np.ndarray, output_size: tuple[int, int] | None = None) -> MaskView:
        """Masks for one model output, lent without a copy (a :class:`~gpu_seg.results.MaskView`).

        On a GPU the masks are read-only views of the buffer the GPU wrote them into (the copy
        into owned arrays, the largest cost of a big frame, is skipped). Release the view (or use
        it as a context manager) when done; the buffer is not reused while any array taken from
        it is referenced. See :mod:`gpu_seg.results` for the lifetime rules.

        Raises:
            CapacityError: too many views are held (or frames in flight) at once.
            The errors of :meth:`process`.
        """
        self._check_open()
        frame, _, _ = self._prepare(tensor, output_size, None, None)
        view = self._process_frame(frame, None, None, lend=True)
        assert isinstance(view, MaskView)
        return view

    def submit(
        self,
        tensor: np.ndarray,
        output_size: tuple[int, int] | None = None,
        *,
        confidence_out: np.ndarray | None = None,
        category_out: np.ndarray | None = None,
    ) -> PendingFrame:
        """Start a frame and return at once; collect it later (frames in flight).

        On a GPU with the mapped readback the frame's upload, passes and readback are queued and
        the call returns; the next frames can be submitted before this one is collected, so the
        GPU's work on one overlaps the host's work on another. Elsewhere (llvmpipe, the CPU path)
        the frame is computed now and collecting it only returns it. Arguments as :meth:`process`.

        The tensor must not be modified until the frame is collected (a frame hit by a context
        loss is recomputed from it). Every submitted frame is either computed exactly or raises
        when collected; none returns stale data.

        Returns:
            A :class:`~gpu_seg.results.PendingFrame`: ``.result()`` or ``.view()``.

        Raises:
            CapacityError: too many frames in flight (or zero-copy views held); collect some first.
        """
        self._check_open()
        frame, confidence_dst, category_dst = self._prepare(tensor, output_size, confidence_out, category_out)
        pending = PendingFrame(self._collect_pending, frame, confidence_dst, category_dst)
        routed = None if self._supervisor is None else self._route(frame)
        if self._supervisor is not None and routed is not None and routed[0] is Route.GL:
            try:
                with self._lock():
                    self._check_open()
                    self._end_lease("superseded by a later frame")  # again, under the lock
                    pending.flight = self._supervisor.submit(frame)
            finally:
                self._events.deliver()
            if pending.flight is not None:
                if self._idle is not None:
                    self._idle.touch()
                return pending
        computed = self._process_frame(frame, confidence_dst, category_dst, routed=routed)
        assert isinstance(computed, Result)
        pending.computed = computed
        return pending

    __call__ = process

    def process_resident(
        self, tensor: np.ndarray | GLTensor, output_size: tuple[int, int] | None = None
    ) -> ResidentMasks:
        """Masks for one model output, left on the GPU as GL textures (no host round trip).

        Args:
            tensor: a numpy tensor as for :meth:`process` (uploaded as usual), or a
                :class:`~gpu_seg.GLTensor`: a GL buffer (HWC float32) or float texture of the
                processor's context, used on the GPU (padded layouts are rearranged by a small
                pass, never through the host).
            output_size: ``(width, height)``; defaults to the tensor size.

        Returns:
            :class:`~gpu_seg.ResidentMasks`: exact-size textures in the processor's context, valid
            until the next frame of this processor (any ``process*``/``submit`` call), ``release()``,
            ``trim()`` or ``close()``; afterwards access raises ``ExpiredResultError``, and
            ``ContextLostError`` if the frame's context generation was lost. The textures are
            pooled per output size (no GL allocation per frame): keep the size stable.

        Context loss: a numpy tensor is recomputed on the new generation like :meth:`process`;
        a GLTensor of a dead generation raises ``ContextLostError`` (upload it again). There is no
        CPU answer: with ``backend="auto"`` and GL unavailable (or in its CPU fallback) this raises
        ``GLUnavailableError``; ``backend="cpu"`` always raises it.

        Owned contexts run GL on the processor's GL thread: draw or read the textures inside
        :meth:`run_gl` (or use ``ResidentMasks.read_confidence()/read_category()``). Attached
        contexts: use them on the application's GL thread directly.

        Raises:
            InputError: bad tensor (wrong context, format, size, buffer too small) or size.
            GLUnavailableError, ContextLostError, ShaderBuildError: GL cannot compute the frame.
        """
        from .resident import ResidentMasks, process_resident

        self._check_open()
        images, lease = process_resident(self, tensor, output_size)
        return ResidentMasks(self, lease, images, self.confidence_format)

    def process_cuda(self, tensor: object, output_size: tuple[int, int] | None = None) -> CudaMasks:
        """Masks for a CUDA tensor, as CUDA arrays, through CUDA-GL interop (no host copy anywhere).

        Needs the optional extra ``cuda`` (cuda-python) and an NVIDIA GPU whose EGL device is the
        tensor's CUDA device (``EGL_CUDA_DEVICE_NV``; attached contexts: ``cudaGLGetDevices``).

        Args:
            tensor: an object with ``__cuda_array_interface__`` (torch, CuPy, JAX, Numba): float32,
                C-contiguous, ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)`` (HWC, row 0 = top).
            output_size: ``(width, height)``; defaults to the tensor size.

        Returns:
            :class:`~gpu_seg.CudaMasks`: ``confidence_masks`` ``(masks, height, width)`` and
            ``category_mask`` ``(height, width)`` uint8 as :class:`~gpu_seg.CudaArray`, which own
            their device memory (valid while referenced, never overwritten by later frames; freed
            memory returns to a bounded pool). ``torch.as_tensor(x, device="cuda")`` and
            ``cupy.asarray(x)`` wrap them without a copy; ``to_host()`` copies.

        The copies run on the legacy default stream, after the producer's stream (named in the
        tensor's interface) is synchronised; consumers synchronise through the results' interface.
        A context loss during the frame recomputes it on a new generation (the CUDA input is still
        valid). Ends the lifetime of the previous ``process_resident`` results.

        Raises:
            InputError: not a CUDA array (a host array: use :meth:`process`), wrong dtype, shape or
                strides, or a tensor on another CUDA device than the GL context's.
            GLUnavailableError: no cuda-python, no CUDA driver/device, the GL context is not on a
                CUDA device (llvmpipe, another vendor), a known-broken cuda-python, no GL.
            ContextLostError: the context was lost and could not be rebuilt.
        """
        from .cuda.frames import process_cuda

        self._check_open()
        return process_cuda(self, tensor, output_size)

    def run_gl(self, function: Callable[[moderngl.Context], T]) -> T:
        """Call ``function(ctx)`` with the processor's GL context current and return its result.

        Owned mode: on the processor's GL thread (the only thread where its context may be used),
        under the processor's lock; use it to create GL-side inputs (``ctx.buffer(...)``,
        ``ctx.texture(...)``: release them here too) and to draw or read resident textures. Objects
        made here belong to the context generation of ``ctx``: after it ends (a context loss,
        ``trim(release_context=True)``, an idle release) they are gone with it; releasing one then
        does nothing, and any other use is undefined (``obj.ctx is ctx`` says whether it is of the
        current generation; make a new one if not). Attached
        mode: on the calling thread, which must be the attaching one. The context's health is
        checked afterwards: a loss raises ``ContextLostError`` (the next frame rebuilds).
        Creates the GL generation if there is none yet. In owned mode ``function`` runs under
        ``gl_timeout`` like a frame: if it takes longer, the driver is taken for hung, which is a
        context loss (``ContextLostError``; the generation goes, with the objects ``function``
        made). Raise ``gl_timeout`` for long work such as large uploads.

        ``function`` must not use the processor (owned mode): any method or property of it, or of
        its lent results, would wait for the GL thread that runs ``function``; it raises
        ``InputError`` (argument ``"function"``) at once instead.
        """
        if not callable(function):
            raise InputError("function", f"{type(function).__name__} is not callable; pass function(ctx)")
        try:
            with self._lock():
                self._check_open()
                if self._supervisor is None:
                    raise GLUnavailableError("a processor created with backend='cpu' has no GL context")
                generation = self._supervisor.current_generation()
                mgl = generation.session.mgl

                def call() -> T:
                    try:
                        return function(mgl)
                    finally:
                        reset_state()  # whatever state function left, the passes get their own

                return self._supervisor.run_on_session(generation.session, call)
        finally:
            self._events.deliver()

    def _run_leased(self, lease: Lease, work: Callable[[], T]) -> T:
        """Run ``work`` (GL) on the lease's generation while the lease holds."""
        try:
            with self._lock():
                lease.check()
                assert self._supervisor is not None
                return self._supervisor.run_on_session(lease.session, work)
        finally:
            self._events.deliver()

    def _end_lease(self, why: str) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.end(why)

    def attach(self, context: moderngl.Context | Literal["current"] = "current") -> None:
        """Work inside an application-owned context from now on (a new generation).

        Call it with the new context current, on the thread that will call ``process()``, after
        the application recreated its context (for example a new window after the old one was
        destroyed). The previous generation's objects are dropped without GL calls if its context
        is gone, or released if it is still alive and current.
        """
        _check_context(context, "expected 'current' or a moderngl.Context")
        try:
            with self._lock():
                self._check_open()
                if self._supervisor is None:
                    raise InputError("context", "a processor created with backend='cpu' has no GL side")
                self._end_lease("attach() began a new context generation")
                self._supervisor.attach(context)
        finally:
            self._events.deliver()

    def trim(self, release_context: bool = False) -> None:
        """Release pooled GL textures, framebuffers, buffers and cached programs now.

        The next frame recreates what it needs (exactly as before). With ``release_context`` an
        owned context is released too and the next frame creates a new one (not a loss). Use it
        when the application goes idle; ``idle_release_after`` does it automatically.
        """
        try:
            with self._lock():
                self._check_open()
                self._end_lease("trim() released the pooled GL objects")
                if self._supervisor is not None:
                    self._supervisor.trim(release_context)
                if self._cuda is not None:
                    self._cuda.trim()
                self._arrays.release()
        finally:
            self._events.deliver()

    @property
    def stats(self) -> ProcessorStats:
        """Counters since creation and what the GL side holds now (a consistent snapshot, a new
        ``dict`` each time; its keys: :class:`~gpu_seg.types.ProcessorStats`).

        ``gpu_memory`` is what the driver says about video memory (``GL_NVX_gpu_memory_info``:
        total/dedicated/available/evicted KiB; ``GL_ATI_meminfo``: free texture KiB), or None
        where it says nothing (llvmpipe).
        """
        with self._lock():
            supervisor = self._supervisor
            gl = supervisor.counters if supervisor else None
            generation = supervisor.generation if supervisor else None
            return {
                "frames": self._frames,
                "gl_frames": self._gl_frames,
                "cpu_frames": self._cpu_frames,
                "backoff_cpu_frames": self._backoff_cpu_frames,
                "context_losses": gl.context_losses if gl else 0,
                "rebuilds": gl.rebuilds if gl else 0,
                "trims": gl.trims if gl else 0,
                "program_builds": gl.builds.program_builds if gl else 0,
                "link_failures": gl.builds.link_failures if gl else 0,
                "program_evictions": gl.builds.program_evictions if gl else 0,
                "fallback_active": bool(supervisor and supervisor.recovery.fallback_active),
                "generation": supervisor.last_number if supervisor else 0,
                "live_gl_objects": supervisor.live_gl_objects() if supervisor else 0,
                "programs": len(generation.pipeline.programs) if generation else 0,
                "gpu_memory": supervisor.gpu_memory() if supervisor else None,
                "cpu_path": self._cpu.kind if self._cpu else None,
                "cpu_threads": self._cpu.threads if self._cpu else 0,
                "speed_choice": self._speed.summary() if self._speed else None,
                "chosen_cpu_frames": self._chosen_cpu_frames,
                "last_gpu_ms": generation.pipeline.last_gpu_ms if generation else None,
                "gl_passes": generation.pipeline.passes if generation else None,
                "last_resident_passes": generation.pipeline.last_resident_passes if generation else None,
                "recycled_arrays": self._arrays.reused,
                "recycled_bytes_kept": self._arrays.kept_bytes,
                "recycling_off": self._arrays.disabled,
            }

    @property
    def context_info(self) -> ContextInfo | None:
        """The current session's :class:`~gpu_seg.gl.session.ContextInfo`, or None without GL."""
        with self._lock():
            generation = self._supervisor.generation if self._supervisor else None
            return generation.session.info if generation else None

    def live_gl_objects(self) -> int:
        """GL objects held now: the context plus textures, framebuffers, vertex arrays, programs."""
        with self._lock():
            return self._supervisor.live_gl_objects() if self._supervisor else 0

    def close(self) -> None:
        """Release every GL object and the owned context. Idempotent; a ``close()`` cut short (an
        interrupt while it waited for the GL thread) is finished by the next one."""
        idle = self._idle
        if idle is not None:
            idle.stop()  # idempotent: cut short, the next close() stops it again
            self._idle = None
        with self._lock():
            if self._close_done:
                return
            self._closed = True
            self._end_lease("the processor was closed")
            _release(self._parts)
            self._close_done = True
            self._finalizer.detach()

    def __enter__(self) -> SegmentationPostprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        supervisor = self._supervisor
        fallback = bool(supervisor and supervisor.recovery.fallback_active)
        state = "closed" if self._closed else ("cpu fallback" if fallback else "ready")
        generation = supervisor.last_number if supervisor else 0
        return (
            f"<SegmentationPostprocessor activation={self.activation.value} backend={self.backend} "
            f"generation={generation} {state}>"
        )

    # ----------------------------------------------------------------------------- frames
    def _prepare(
        self,
        tensor: object,
        output_size: object,
        confidence_out: np.ndarray | None,
        category_out: np.ndarray | None,
    ) -> tuple[Frame, np.ndarray | None, np.ndarray | None]:
        """The validated frame and output arrays of a call; once they are valid, it ends the last
        resident frame's lease (a call refused for its arguments runs no frame and ends nothing)."""
        frame = self._frame(tensor, output_size)
        confidence_dst = (
            None
            if confidence_out is None
            else check_output_array(
                confidence_out, "confidence_out", frame.confidence_shape, self.confidence_dtype
            )
        )
        category_dst = (
            None
            if category_out is None
            else check_output_array(category_out, "category_out", frame.category_shape, np.dtype(np.uint8))
        )
        check_disjoint_outputs(frame.tensor, confidence_dst, category_dst)
        check_output_bytes(frame, confidence_dst, category_dst)
        self._end_lease("superseded by a later frame")
        return frame, confidence_dst, category_dst

    def _process_frame(
        self,
        frame: Frame,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
        lend: bool = False,
        flight: InFlight | None = None,
        routed: tuple[Route, object] | None = None,
    ) -> Result | MaskView:
        """One frame on the route it takes (GL, or the CPU); a MaskView when ``lend``. ``routed``:
        the route already taken for this frame (``submit``: each frame counts once in the choice)."""
        if self._idle is not None:
            self._idle.touch()
        if self._supervisor is None:
            return _shaped(self._cpu_frame(frame, confidence_dst, category_dst), lend)
        if flight is not None:
            route, key = Route.GL, None
        else:
            route, key = routed if routed is not None else self._route(frame)
        if route in (Route.TIME_GL, Route.TIME_CPU):
            # The CPU kernels' warm-up (a background thread from the start) is part of neither time:
            # the CPU frame would wait for it, and a GL frame would share the cores with it.
            self._cpu.wait_until_warm()
        if route in (Route.CPU, Route.TIME_CPU):
            started = time.perf_counter()
            result = self._cpu_frame(frame, confidence_dst, category_dst, chosen=True)
            self._record_speed(key, route, time.perf_counter() - started)
            return _shaped(result, lend)
        if flight is None:
            self._prepare_cpu(frame)
        started = time.perf_counter()
        gl = self._gl_frame(frame, confidence_dst, category_dst, lend, flight)
        if gl is None:
            return _shaped(self._cpu_frame(frame, confidence_dst, category_dst), lend)
        if route is Route.TIME_GL:
            self._record_speed(key, route, time.perf_counter() - started)
        return gl

    def _collect_pending(self, pending: PendingFrame, lend: bool) -> Result | MaskView:
        """Collect a submitted frame (called by ``PendingFrame.result()`` / ``.view()``)."""
        if pending.computed is not None:
            return _shaped(pending.computed, lend)
        flight, pending.flight = pending.flight, None
        self._check_open()
        # With the caller's arrays the masks are in them: a view of those (not zero-copy)
        given = pending.confidence_dst is not None or pending.category_dst is not None
        result = self._process_frame(
            pending.frame, pending.confidence_dst, pending.category_dst, lend and not given, flight
        )
        return _shaped(result, lend) if given else result

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this SegmentationPostprocessor was closed")

    def _frame(self, tensor: object, output_size: object, gl_only: bool = False) -> Frame:
        """The validated frame. A frame too large for GL (tensor or output size beyond the texture
        limit) raises InputError when only GL may compute it (``backend="gl"``, ``gl_only``: a
        resident frame); with a CPU backend it goes to the CPU (see :meth:`_route`)."""
        cpu = self._cpu is not None and not gl_only
        supervisor = self._supervisor
        gl_max = supervisor.max_texture_size if supervisor is not None else None
        frame = make_frame(
            tensor,
            self.activation,
            output_size,
            confidence=self.output_confidence_masks,
            category=self.output_category_mask,
            confidence_format=self.confidence_format,
            confidence_channels=self.confidence_channels,
            max_dim=CPU_MAX_OUTPUT_DIM if cpu else gl_max or CPU_MAX_OUTPUT_DIM,
        )
        refusal = None if cpu else self._gl_refusal(frame)
        if refusal is not None:
            raise refusal
        return frame

    def _gl_refusal(self, frame: Frame) -> InputError | None:
        """Why GL cannot compute ``frame`` (its texture limit), or None (also while the limit is not
        known yet)."""
        supervisor = self._supervisor
        gl_max = supervisor.max_texture_size if supervisor is not None else None
        if not gl_max:
            return None
        for name, value in (("width", frame.width), ("height", frame.height)):
            if value > gl_max:
                return InputError("output_size", f"{name} {value} exceeds the GL texture limit of {gl_max}")
        try:
            TensorLayout.check_fits(*frame.tensor.shape, gl_max, frame.softmax_statistics)
        except InputError as exc:
            return exc
        return None

    def _gl_frame(
        self,
        frame: Frame,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
        lend: bool = False,
        flight: InFlight | None = None,
    ) -> Result | MaskView | None:
        """The frame on GL (a frame in flight: collected), or None when it goes to the CPU."""
        assert self._supervisor is not None
        lend = lend and confidence_dst is None and category_dst is None
        while True:
            try:
                with self._lock():
                    self._check_open()
                    # Again under the lock: a resident frame of another thread may have started a
                    # lease since _prepare(); a frame computed now may release the textures it
                    # lends (collecting a frame in flight computes nothing unless it is stale).
                    if flight is None or self._supervisor.flight_is_stale(flight):
                        self._end_lease("superseded by a later frame")
                    if flight is not None:
                        outcome = self._supervisor.finish(flight, confidence_dst, category_dst, lend)
                        flight = None  # a WAIT: the frame is recomputed by run() afterwards
                    else:
                        outcome = self._supervisor.run(frame, confidence_dst, category_dst, lend)
                    if outcome.verdict is Verdict.DONE:
                        self._frames += 1
                        self._gl_frames += 1
                    elif outcome.during_backoff:
                        self._backoff_cpu_frames += 1
            finally:
                self._events.deliver()
            if outcome.verdict is Verdict.WAIT:
                time.sleep(outcome.delay)  # a deferred rebuild, without holding the lock
                continue
            if outcome.verdict is Verdict.CPU:
                return None
            confidence, category = outcome.confidence, outcome.category
            if lend:
                zero_copy = any(a is not None and not a.flags.owndata for a in (confidence, category))
                return MaskView(confidence, category, "gl", zero_copy)
            return Result(_into(confidence, confidence_dst), _into(category, category_dst), "gl")

    def _cpu_frame(
        self,
        frame: Frame,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
        chosen: bool = False,
    ) -> Result:
        assert self._cpu is not None
        confidence = confidence_dst if confidence_dst is not None else frame.allocate_confidence(self._arrays)
        category = category_dst if category_dst is not None else frame.allocate_category(self._arrays)
        self._cpu.compute(frame, confidence, category)
        with self._lock():
            self._frames += 1
            self._cpu_frames += 1
            self._chosen_cpu_frames += int(chosen)
        return Result(confidence, category, "cpu")

    def _route(self, frame: Frame) -> tuple[Route, object]:
        """GL, or on a software rasteriser (auto, owned context) whichever is faster for the frame;
        the CPU for a frame too large for GL (auto)."""
        if self._cpu is not None and self._gl_refusal(frame) is not None:
            return Route.CPU, None
        if self._speed is None:
            return Route.GL, None
        with self._lock():
            supervisor = self._supervisor
            generation = supervisor.generation if supervisor is not None else None
            if generation is None or not generation.session.owned:
                return Route.GL, None
            if not is_software_renderer(generation.session.info.renderer):
                return Route.GL, None
            key = frame_key(frame)
            return self._speed.route(key), key

    def _record_speed(self, key: object, route: Route, seconds: float) -> None:
        if self._speed is not None and key is not None:
            with self._lock():
                self._speed.record(key, route, seconds)

    def _prepare_cpu(self, frame: Frame) -> None:
        """Keep the CPU path ready for a geometry that repeats, so a fallback frame is not slow."""
        if self._cpu is None:
            return
        geometry = (frame.tensor.shape, frame.width, frame.height)
        if geometry == self._last_geometry:
            self._cpu.prepare(frame)
        self._last_geometry = geometry

    def _trim_if_idle(self, release_context: bool) -> None:
        """Called by the idle watch on its own thread."""
        try:
            with self._lock():
                if self._closed:
                    return
                self._arrays.release()
                if self._supervisor is None:
                    return
                if self._supervisor.attached:  # its context is used only on its own thread
                    self._supervisor.drop_staging()  # host memory: fine from here
                    return
                self._end_lease("the idle release trimmed the pooled GL objects")
                self._supervisor.trim(release_context)
        except Exception:  # never let the idle thread die on a GL problem; the next frame sees it
            log.exception("gpu_seg idle trim failed")
        finally:
            self._events.deliver()


def _release(parts: dict[str, Any]) -> None:
    """Release what a processor holds (see ``SegmentationPostprocessor._parts``): for
    :meth:`~SegmentationPostprocessor.close`, the finalizer of a processor collected without it,
    and a failed constructor. A part is forgotten once closed, so a release cut short (an
    interrupt) is finished by the next."""
    idle = parts.get("idle")
    if idle is not None:
        idle.stop()
        parts.pop("idle", None)
    for name in ("supervisor", "cuda", "cpu"):
        part = parts.get(name)
        if part is not None:
            try:
                part.close()
            except Exception as exc:  # a dying driver: what can be released is. An interrupt goes
                if not driver_failure(exc):  # on, and the part is kept for the next close()
                    raise
                log.exception("gpu_seg: releasing the %s of a processor failed", name)
            parts.pop(name, None)
    arrays = parts.get("arrays")
    if arrays is not None:
        arrays.release()


def _shaped(result: Result, lend: bool) -> Result | MaskView:
    """``result`` itself, or as a (not zero-copy) MaskView when a view was asked for."""
    if not lend:
        return result
    return MaskView(result.confidence_masks, result.category_mask, result.backend, zero_copy=False)


def _into(computed: np.ndarray | None, destination: np.ndarray | None) -> np.ndarray | None:
    """The result array: ``computed`` itself, or the caller's array once the frame is known good."""
    if destination is None or computed is None or computed is destination:
        return computed
    np.copyto(destination, computed)
    return destination


def _gl_thread_of(parts: dict[str, Any]) -> Callable[[], GLThread | None]:
    """The GL thread of the processor whose parts are ``parts`` (never the processor itself: see
    ``_parts``)."""

    def gl_thread() -> GLThread | None:
        supervisor = parts.get("supervisor")
        return None if supervisor is None else supervisor.gl_thread

    return gl_thread


def _callback(on_event: Callable[[Event], None] | None) -> Callable[[Event], None] | None:
    """``on_event`` checked: None or a callable."""
    if on_event is not None and not callable(on_event):
        kind = type(on_event).__name__
        raise InputError("on_event", f"{kind} is not callable; pass a function(event) or None")
    return on_event
