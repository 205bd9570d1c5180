"""``gpu-seg soak``: many frames through one processor, its GL context destroyed every K frames.

Every frame gets a fresh seeded random tensor and is checked against the numpy reference
(``gpu_seg.reference_postprocess``) with :func:`gpu_seg.tools.parity.parity`: confidence masks
within 2e-5 (plus 1e-5 relative with activation none), category masks identical except at near
ties (output pixels whose top two align-corners-interpolated values differ by less than 1e-5). The
result of the previous frame is checked again after each frame, so a mask that a later frame
overwrote is caught too.

Before frame i (i > 0, i % K == 0) the processor's real EGL context is destroyed
(``gpu_seg.testing.lose_context``); the processor must notice, rebuild and recompute the frame.
The report gives frames, losses, rebuilds, GL and CPU (fallback) frames, mismatched frames, and the
resident memory (VmRSS) and live GL objects after warm-up, in the middle and at the end, and checks
that the live GL objects return to the warm-up count after every rebuild (:class:`SoakReport`).

Optional modes, alone or together:

* **idle** (:class:`~.plan.IdlePlan`): every N frames the processor sits idle and releases its GL
  objects (``pp.trim()``, or its own ``idle_release_after``); memory, live GL objects, programs and
  GPU memory are taken before the pause, after the release and after the wake-up frame.
* **churn**: a new seeded random output size every frame (:class:`~.plan.ChurnSizes`).
* **fallback**: before soak frame F the loss budget is exhausted and the context lost, so frame F
  is the processor's first CPU frame; its latency is compared with the median later CPU frame.
* **in flight**: frames are submitted (``pp.submit``, mapped readback) and collected one frame
  later, so every injected loss hits a queued frame; every other frame is collected as a zero-copy
  view, released at once, and its arrays are kept and checked again after the next frame (they
  must never be overwritten). Latencies are from submission to collection.
"""

from __future__ import annotations

import time

import numpy as np

from ...errors import GpuSegError
from ...postprocessor import SegmentationPostprocessor
from ...reference import reference_postprocess
from ...resilience import RecoveryPolicy
from ...results import PendingFrame
from ...testing import exhaust_loss_budget, lose_context
from ...types import Activation, Result
from .. import Progress
from .loop import SoakLoop, default_budget, judge, median_or_none, recovery_policy, reported_if_interrupted
from .plan import AUTO_RELEASE_GRACE_S, ChurnSizes, IdlePlan
from .report import IdlePeriod, SoakReport, snapshot

__all__ = ["DEFAULT_WARMUP", "LOGIT_SCALE", "compare", "soak"]

#: Standard deviation of the random logits: wide enough for confident pixels and near ties both.
LOGIT_SCALE = 4.0
#: Frames run (and checked) before the baseline RSS and GL-object figures are taken.
DEFAULT_WARMUP = 10


def compare(
    result: Result, expected: Result, tensor: np.ndarray, activation: Activation, size: tuple[int, int]
) -> tuple[str | None, float, int]:
    """Check one frame. Returns ``(problem or None, confidence max |diff|, near-tie pixels)``."""
    report = judge(result, expected, tensor, activation, size)
    return report.problem, report.confidence_error, report.near_ties


class _TensorSoak(SoakLoop):
    """Random tensors through one processor, with the idle, churn and fallback modes."""

    report: SoakReport

    def __init__(
        self,
        report: SoakReport,
        activation: Activation,
        policy: RecoveryPolicy,
        idle: IdlePlan | None,
        churn: ChurnSizes | None,
        in_flight: bool = False,
        gl_passes: str = "auto",
    ) -> None:
        super().__init__(report)
        self.in_flight = in_flight
        #: Submitted, not yet collected: (label, pending frame, tensor, size, submission time).
        self.queued: list[tuple[str, PendingFrame, np.ndarray, tuple[int, int], float]] = []
        self.collected = 0
        self.activation = activation
        self.idle = idle
        self.churn = churn
        self.rng = np.random.default_rng(report.seed)
        self.previous: tuple[Result, Result, np.ndarray, tuple[int, int]] | None = None
        self.waking: IdlePeriod | None = None
        self.fallback_pending = False
        self.steady_cpu_ms: list[float] = []
        options = idle.processor_options() if idle is not None else {}
        if in_flight or gl_passes == "compute":
            options["readback"] = "mapped"  # the compute passes write buffers only it reads
        self.pp = SegmentationPostprocessor(
            activation,
            backend="auto",
            on_event=self.on_event,
            policy=policy,
            software_renderer="gl",  # a soak exercises GL recovery, also on llvmpipe
            gl_passes=gl_passes,
            **options,
        )

    # ----------------------------------------------------------------------------- one frame
    def frame(self, label: str) -> None:
        report = self.report
        size = self.churn() if self.churn is not None else report.output_size
        tensor = (self.rng.standard_normal(report.tensor_shape) * LOGIT_SCALE).astype(np.float32)
        if self.in_flight:
            self.submit(label, tensor, size)
            return
        started = time.perf_counter()
        try:
            result = self.pp.process(tensor, size)
        except Exception as exc:  # recorded: the soak reports, it does not stop
            self.raised(label, exc)
            self.previous = None
            return
        finally:
            self.last_frame_end = time.monotonic()
        ms = (time.perf_counter() - started) * 1e3
        self.returned(result.backend, ms)
        self.after_injection(result.backend, ms)
        self.check(label, result, tensor, size)

    def submit(self, label: str, tensor: np.ndarray, size: tuple[int, int]) -> None:
        """In-flight mode: queue this frame, then collect the one before it."""
        try:
            pending = self.pp.submit(tensor, size)
        except Exception as exc:  # recorded: the soak reports, it does not stop
            self.raised(label, exc)
            self.previous = None
            return
        self.queued.append((label, pending, tensor, size, time.perf_counter()))
        if len(self.queued) > 1:
            self.collect_oldest()

    def collect_oldest(self) -> None:
        label, pending, tensor, size, submitted = self.queued.pop(0)
        as_view = self.collected % 2 == 1
        self.collected += 1
        try:
            if as_view:
                view = pending.view()
                result = Result(view.confidence_masks, view.category_mask, view.backend)
                view.release()  # its arrays stay referenced (self.previous): never overwritten
            else:
                result = pending.result()
        except Exception as exc:
            self.raised(label, exc)
            self.previous = None
            return
        finally:
            self.last_frame_end = time.monotonic()
        ms = (time.perf_counter() - submitted) * 1e3
        self.returned(result.backend, ms)
        self.after_injection(result.backend, ms)
        self.check(label, result, tensor, size)

    def after_injection(self, backend: str, ms: float) -> None:
        """The wake-up frame of an idle period, the first fallback frame, the CPU frames after it."""
        report = self.report
        if self.waking is not None:
            period, self.waking = self.waking, None
            period.woken, _ = self.snapshot(period.frame)
            period.wake_frame_ms, period.wake_backend = ms, backend
        if self.fallback_pending:
            self.fallback_pending = False
            report.fallback_frame_backend, report.first_fallback_frame_ms = backend, ms
        elif report.fallback_frame_backend is not None and backend == "cpu":
            self.steady_cpu_ms.append(ms)

    def check(self, label: str, result: Result, tensor: np.ndarray, size: tuple[int, int]) -> None:
        report, activation = self.report, self.activation
        expected = reference_postprocess(tensor, activation, size)
        problem, error, near = compare(result, expected, tensor, activation, size)
        report.worst_confidence_error = max(report.worst_confidence_error, error)
        report.near_tie_pixels += near
        if problem is not None:
            self.mismatch(f"{label} ({result.backend})", problem)
        if self.previous is not None:  # the previous frame passed: its arrays must not have changed
            old_result, old_expected, old_tensor, old_size = self.previous
            old_problem, _, _ = compare(old_result, old_expected, old_tensor, activation, old_size)
            if old_problem is not None:
                report.overwritten_frames += 1
                if len(report.first_mismatches) < 10:
                    report.first_mismatches.append(f"{label}: previous frame's result changed: {old_problem}")
        self.previous = (result, expected, tensor, size) if problem is None else None

    # ----------------------------------------------------------------------------- injections
    def before_frame(self, i: int) -> None:
        if self.idle is not None and self.idle.due(i):
            self.idle_period(i)
        if self.report.fallback_at is not None and i == self.report.fallback_at:
            self.force_fallback(i)
        else:
            super().before_frame(i)

    def force_fallback(self, i: int) -> None:
        """Exhaust the loss budget and lose the context: frame ``i`` is the first fallback frame."""
        try:
            exhaust_loss_budget(self.pp)
            lose_context(self.pp)
            self.report.losses += 1
        except GpuSegError as exc:
            self.record_error(f"fallback before frame {i}", exc)
        self.fallback_pending = True

    def idle_period(self, i: int) -> None:
        """No frame for ``idle.seconds``; the release, by ``pp.trim()`` or by the processor itself."""
        assert self.idle is not None
        idle, pp = self.idle, self.pp
        self.trimmed.clear()
        idle_since = self.last_frame_end
        before, _ = self.snapshot(i)
        period = IdlePeriod(len(self.report.idle_periods), i, idle.release, before)
        self.report.idle_periods.append(period)
        if idle.automatic:
            deadline = idle_since + max(idle.seconds, idle.release_after + AUTO_RELEASE_GRACE_S)
            released = self.trimmed.wait(max(0.0, deadline - time.monotonic()))
        else:
            try:
                pp.trim(release_context=idle.releases_context)
                released = True
            except Exception as exc:
                self.record_error(f"pp.trim() before frame {i}", exc)
                released = False
        if released:
            period.release_s = time.monotonic() - idle_since
            period.released, _ = self.snapshot(i)
        time.sleep(max(0.0, idle_since + idle.seconds - time.monotonic()))
        self.waking = period

    def finish(self) -> None:
        while self.queued:
            self.collect_oldest()
        super().finish()
        self.report.steady_cpu_frame_ms = median_or_none(self.steady_cpu_ms)
        if self.churn is not None:
            self.report.distinct_output_sizes = len(self.churn.seen)


def _check_arguments(
    frames: int,
    lose_every: int,
    size: tuple[int, int],
    shape: tuple[int, ...],
    warmup: int,
    fallback_at: int | None,
) -> None:
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if lose_every < 0:
        raise ValueError(f"lose_every must not be negative, got {lose_every}")
    if min(size) < 1:
        raise ValueError(f"output size must be positive, got {size[0]}x{size[1]}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"tensor shape must be three positive sizes (H, W, C), got {shape}")
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1, got {warmup}")
    if fallback_at is not None and not 0 <= fallback_at <= frames - 3:
        raise ValueError(
            f"fallback_at must leave at least two CPU frames after the first fallback frame: "
            f"0 <= fallback_at <= frames - 3 = {frames - 3}, got {fallback_at}"
        )


def soak(
    frames: int = 2000,
    lose_every: int = 250,
    output_size: tuple[int, int] = (160, 120),
    tensor_shape: tuple[int, int, int] = (32, 32, 6),
    activation: Activation | str = Activation.SOFTMAX,
    seed: int = 0,
    budget: int | None = None,
    backoff: float | None = None,
    warmup: int = DEFAULT_WARMUP,
    progress: Progress | None = None,
    *,
    idle: IdlePlan | None = None,
    churn: bool = False,
    fallback_at: int | None = None,
    in_flight: bool = False,
    gl_passes: str = "auto",
) -> SoakReport:
    """Run ``frames`` checked frames with a context loss before every ``lose_every``-th one.

    Args:
        frames: frames in the soak proper (after ``warmup`` checked warm-up frames).
        lose_every: destroy the GL context before soak frame ``i`` when ``i % lose_every == 0``
            and ``i > 0``; 0 never does.
        output_size: ``(width, height)`` of the masks (with ``churn``: the nominal size).
        tensor_shape: ``(H, W, C)`` of the random logits (a new tensor every frame).
        activation: the processor's activation.
        seed: seed of the random tensors (and of the churn sizes).
        budget: loss-budget capacity (:class:`~gpu_seg.resilience.LossBudget`); ``None`` gives
            :func:`default_budget`, enough to rebuild every injected loss instead of falling back.
        backoff: base delay in seconds of the rebuild backoff for losses in quick succession
            (:class:`~gpu_seg.resilience.Backoff`); ``None`` keeps the library default (50 ms,
            doubling up to 2 s).
        warmup: checked frames before the baseline figures (RSS, live GL objects) are taken.
        progress: called as ``progress(1, "losses=.. rebuilds=.. bad=..")`` after every soak frame.
        idle: idle periods and how the processor releases its GL objects in them.
        churn: a new seeded random output size every frame, each side between a quarter and twice
            ``output_size``.
        fallback_at: before this soak frame exhaust the loss budget and lose the context; the
            report compares that first CPU frame with the median of the CPU frames after it.
        in_flight: submit frames and collect each one frame later, every other one as a zero-copy
            view (see the module docstring).
        gl_passes: the processor's ``gl_passes`` (``"compute"`` soaks the GPUs' default passes on
            any GL 4.3 machine, llvmpipe included).

    Returns:
        The :class:`SoakReport`. Exceptions from ``process()`` are recorded, not raised.
    """
    activation = Activation(str(activation).lower()) if not isinstance(activation, Activation) else activation
    width, height = (int(v) for v in output_size)
    shape = tuple(int(v) for v in tensor_shape)
    _check_arguments(frames, lose_every, (width, height), shape, warmup, fallback_at)
    if budget is None:
        budget = default_budget(frames, lose_every)
    policy = recovery_policy(budget, backoff)
    sizes = ChurnSizes((width, height), seed) if churn else None
    report = SoakReport(
        frames=frames,
        lose_every=lose_every,
        output_size=(width, height),
        tensor_shape=shape,  # type: ignore[arg-type]
        activation=activation.value,
        seed=seed,
        budget=budget,
        backoff=policy.backoff.base,
        warmup_frames=warmup,
        churn=churn,
        churn_min_size=sizes.min_size if sizes else None,
        churn_max_size=sizes.max_size if sizes else None,
        idle_seconds=idle.seconds if idle else None,
        idle_every=idle.every if idle else 0,
        idle_release=idle.release if idle else None,
        fallback_at=fallback_at,
        in_flight=in_flight,
        gl_passes=gl_passes,
    )
    report.before, _ = snapshot(0)
    started = time.perf_counter()
    with reported_if_interrupted(report):
        _TensorSoak(report, activation, policy, idle, sizes, in_flight, gl_passes).execute(progress, started)
    return report
