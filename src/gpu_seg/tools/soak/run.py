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
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ...errors import GpuSegError
from ...postprocessor import Event, SegmentationPostprocessor
from ...reference import reference_postprocess
from ...resilience import Backoff, LossBudget, RecoveryPolicy
from ...testing import exhaust_loss_budget, lose_context
from ...types import Activation, Result
from .. import Progress
from ..memory import measure_rss
from ..parity import parity
from .plan import AUTO_RELEASE_GRACE_S, ChurnSizes, IdlePlan
from .report import FrameTimes, IdlePeriod, Snapshot, SoakReport, snapshot

__all__ = ["DEFAULT_WARMUP", "LOGIT_SCALE", "compare", "default_budget", "soak"]

#: Standard deviation of the random logits: wide enough for confident pixels and near ties both.
LOGIT_SCALE = 4.0
#: Frames run (and checked) before the baseline RSS and GL-object figures are taken.
DEFAULT_WARMUP = 10
#: RSS samples of ``SoakReport.rss_timeline`` over the soak frames.
TIMELINE_POINTS = 10


def compare(
    result: Result, expected: Result, tensor: np.ndarray, activation: Activation, size: tuple[int, int]
) -> tuple[str | None, float, int]:
    """Check one frame. Returns ``(problem or None, confidence max |diff|, near-tie pixels)``."""
    report = parity(
        result.confidence_masks,
        result.category_mask,
        expected.confidence_masks,
        expected.category_mask,
        tensor,
        activation,
        size,
    )
    return report.problem, report.confidence_error, report.near_ties


def default_budget(frames: int, lose_every: int) -> int:
    """A loss budget that rebuilds every injected loss: ``max(3, frames // lose_every + 1)``."""
    return max(3, frames // lose_every + 1) if lose_every > 0 else 3


class _Run:
    """The state of one soak run: the processor, the report, what is pending for the next frame."""

    def __init__(
        self,
        report: SoakReport,
        activation: Activation,
        policy: RecoveryPolicy,
        idle: IdlePlan | None,
        churn: ChurnSizes | None,
    ) -> None:
        self.report = report
        self.activation = activation
        self.idle = idle
        self.churn = churn
        self.rng = np.random.default_rng(report.seed)
        self.times = FrameTimes()
        self.previous: tuple[Result, Result, np.ndarray, tuple[int, int]] | None = None
        self.rebuilt_pending = False
        self.trimmed = threading.Event()
        self.waking: IdlePeriod | None = None
        self.fallback_pending = False
        self.steady_cpu_ms: list[float] = []
        self.last_frame_end = time.monotonic()
        options = idle.processor_options() if idle is not None else {}
        self.pp = SegmentationPostprocessor(
            activation, backend="auto", on_event=self.on_event, policy=policy, **options
        )

    def on_event(self, event: Event) -> None:
        events = self.report.events
        events[event.kind] = events.get(event.kind, 0) + 1
        if event.kind == "rebuilt":
            self.rebuilt_pending = True
        elif event.kind == "trimmed":
            self.trimmed.set()

    def record_error(self, label: str, exc: BaseException) -> None:
        if len(self.report.errors) < 10:
            self.report.errors.append(f"{label}: {type(exc).__name__}: {exc}")

    # ----------------------------------------------------------------------------- one frame
    def frame(self, label: str) -> None:
        report, pp = self.report, self.pp
        size = self.churn() if self.churn is not None else report.output_size
        tensor = (self.rng.standard_normal(report.tensor_shape) * LOGIT_SCALE).astype(np.float32)
        started = time.perf_counter()
        try:
            result = pp.process(tensor, size)
        except Exception as exc:  # recorded: the soak reports, it does not stop
            report.error_frames += 1
            self.record_error(label, exc)
            self.previous = None
            return
        finally:
            self.last_frame_end = time.monotonic()
        ms = (time.perf_counter() - started) * 1e3
        report.frames_returned += 1
        self.times.add(result.backend, ms)
        self.after_frame(result.backend, ms)
        self.check(label, result, tensor, size)

    def after_frame(self, backend: str, ms: float) -> None:
        """Bookkeeping that depends on what came before this frame (rebuild, idle, fallback)."""
        report, pp = self.report, self.pp
        report.max_live_gl_objects = max(report.max_live_gl_objects, pp.live_gl_objects())
        if self.rebuilt_pending:
            self.rebuilt_pending = False
            report.gl_objects_after_rebuilds.append(pp.live_gl_objects())
            report.rss_after_rebuilds_kib.append(measure_rss()[0])
        if self.waking is not None:
            period, self.waking = self.waking, None
            period.woken, _ = snapshot(period.frame, pp.stats)
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
            report.mismatched_frames += 1
            if len(report.first_mismatches) < 10:
                report.first_mismatches.append(f"{label} ({result.backend}): {problem}")
        if self.previous is not None:  # the previous frame passed: its arrays must not have changed
            old_result, old_expected, old_tensor, old_size = self.previous
            old_problem, _, _ = compare(old_result, old_expected, old_tensor, activation, old_size)
            if old_problem is not None:
                report.overwritten_frames += 1
                if len(report.first_mismatches) < 10:
                    report.first_mismatches.append(f"{label}: previous frame's result changed: {old_problem}")
        self.previous = (result, expected, tensor, size) if problem is None else None

    # ----------------------------------------------------------------------------- injections
    def lose(self) -> None:
        try:
            lose_context(self.pp)
            self.report.losses += 1
        except GpuSegError:  # no owned context now (CPU fallback, released while idle): nothing to lose
            self.report.losses_skipped += 1

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
        before, _ = snapshot(i, pp.stats)
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
            period.released, _ = snapshot(i, pp.stats)
        time.sleep(max(0.0, idle_since + idle.seconds - time.monotonic()))
        self.waking = period

    # ----------------------------------------------------------------------------- the run
    def run(self, frames: int, warmup: int, lose_every: int, fallback_at: int | None, progress) -> None:
        report, pp = self.report, self.pp
        for w in range(warmup):
            self.frame(f"warm-up frame {w}")
        report.start, report.rss_source = snapshot(0, pp.stats)
        report.baseline_gl_objects = report.start.live_gl_objects
        report.rss_timeline.append((0, report.start.rss_kib))
        every = max(1, frames // TIMELINE_POINTS)
        for i in range(frames):
            if self.idle is not None and self.idle.due(i):
                self.idle_period(i)
            if fallback_at is not None and i == fallback_at:
                self.force_fallback(i)
            elif lose_every and i > 0 and i % lose_every == 0:
                self.lose()
            self.frame(f"frame {i}")
            if i == frames // 2:
                report.middle, _ = snapshot(i + 1, pp.stats)
            if (i + 1) % every == 0 and i + 1 < frames:
                report.rss_timeline.append((i + 1, measure_rss()[0]))
            if progress is not None:
                progress(
                    1,
                    f"losses={report.losses} rebuilds={pp.stats['rebuilds']} "
                    f"bad={report.mismatched_frames + report.error_frames}",
                )
        report.end, _ = snapshot(frames, pp.stats)
        report.rss_timeline.append((frames, report.end.rss_kib))

    def finish(self) -> None:
        report, stats = self.report, self.pp.stats
        report.context_losses = int(stats["context_losses"])  # type: ignore[call-overload]
        report.rebuilds = int(stats["rebuilds"])  # type: ignore[call-overload]
        report.gl_frames = int(stats["gl_frames"])  # type: ignore[call-overload]
        report.cpu_frames = int(stats["cpu_frames"])  # type: ignore[call-overload]
        report.gl_frame_ms = self.times.median("gl")
        report.cpu_frame_ms = self.times.median("cpu")
        if self.steady_cpu_ms:
            report.steady_cpu_frame_ms = float(np.median(self.steady_cpu_ms))
        if self.churn is not None:
            report.distinct_output_sizes = len(self.churn.seen)


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

    Returns:
        The :class:`SoakReport`. Exceptions from ``process()`` are recorded, not raised.
    """
    activation = Activation(str(activation).lower()) if not isinstance(activation, Activation) else activation
    width, height = (int(v) for v in output_size)
    shape = tuple(int(v) for v in tensor_shape)
    _check_arguments(frames, lose_every, (width, height), shape, warmup, fallback_at)
    if budget is None:
        budget = default_budget(frames, lose_every)
    if budget < 0:
        raise ValueError(f"budget must not be negative, got {budget}")
    policy_backoff = Backoff() if backoff is None else Backoff(base=backoff)
    policy = RecoveryPolicy(budget=LossBudget(capacity=budget), backoff=policy_backoff)
    sizes = ChurnSizes((width, height), seed) if churn else None

    report = SoakReport(
        frames=frames,
        lose_every=lose_every,
        output_size=(width, height),
        tensor_shape=shape,  # type: ignore[arg-type]
        activation=activation.value,
        seed=seed,
        budget=budget,
        backoff=policy_backoff.base,
        warmup_frames=warmup,
        churn=churn,
        churn_min_size=sizes.min_size if sizes else None,
        churn_max_size=sizes.max_size if sizes else None,
        idle_seconds=idle.seconds if idle else None,
        idle_every=idle.every if idle else 0,
        idle_release=idle.release if idle else None,
        fallback_at=fallback_at,
    )
    rss, in_use, _ = measure_rss()
    report.before = Snapshot(0, rss, 0, in_use)
    started = time.perf_counter()
    run = _Run(report, activation, policy, idle, sizes)
    try:
        run.run(frames, warmup, lose_every, fallback_at, progress)
        run.finish()
    finally:
        run.pp.close()
    report.live_gl_objects_after_close = run.pp.live_gl_objects()
    report.duration_s = time.perf_counter() - started
    return report
