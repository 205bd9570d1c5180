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
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import GpuSegError
from ..postprocessor import Event, SegmentationPostprocessor
from ..reference import reference_postprocess
from ..resilience import Backoff, LossBudget, RecoveryPolicy
from ..testing import lose_context
from ..types import Activation, Result
from . import Progress
from .memory import measure_rss
from .parity import parity

__all__ = ["Snapshot", "SoakReport", "compare", "default_budget", "soak"]

#: Standard deviation of the random logits: wide enough for confident pixels and near ties both.
LOGIT_SCALE = 4.0
#: Frames run (and checked) before the baseline RSS and GL-object figures are taken.
DEFAULT_WARMUP = 10


@dataclass
class Snapshot:
    """Resident memory and live GL objects at one point of the run.

    Taken after ``gc.collect()`` and glibc's ``malloc_trim(0)``
    (see :func:`gpu_seg.tools.memory.measure_rss`).
    ``malloc_in_use_kib`` is what the C allocator has handed out (glibc ``mallinfo2``; ``None``
    elsewhere).
    """

    frame: int
    rss_kib: int
    live_gl_objects: int
    malloc_in_use_kib: int | None = None


@dataclass
class SoakReport:
    """Everything a soak run measured (``asdict`` gives the ``--json`` document)."""

    frames: int
    lose_every: int
    output_size: tuple[int, int]
    tensor_shape: tuple[int, int, int]
    activation: str
    seed: int
    budget: int
    backoff: float
    warmup_frames: int
    frames_returned: int = 0
    losses: int = 0
    losses_skipped: int = 0
    context_losses: int = 0
    rebuilds: int = 0
    gl_frames: int = 0
    cpu_frames: int = 0
    mismatched_frames: int = 0
    overwritten_frames: int = 0
    near_tie_pixels: int = 0
    worst_confidence_error: float = 0.0
    error_frames: int = 0
    errors: list[str] = field(default_factory=list)
    first_mismatches: list[str] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    rss_source: str = "VmRSS"
    before: Snapshot | None = None
    start: Snapshot | None = None
    middle: Snapshot | None = None
    end: Snapshot | None = None
    live_gl_objects_after_close: int = -1
    baseline_gl_objects: int = 0
    gl_objects_after_rebuilds: list[int] = field(default_factory=list)
    rss_after_rebuilds_kib: list[int] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def rebuilds_back_to_baseline(self) -> bool:
        """Every rebuild left exactly the warm-up count of live GL objects after its frame."""
        return all(n == self.baseline_gl_objects for n in self.gl_objects_after_rebuilds)

    @property
    def rss_growth_kib(self) -> int:
        """VmRSS at the end minus VmRSS after warm-up."""
        if self.start is None or self.end is None:
            return 0
        return self.end.rss_kib - self.start.rss_kib

    @property
    def ok(self) -> bool:
        """No mismatched or overwritten frame, no exception, every frame returned."""
        return (
            self.mismatched_frames == 0
            and self.overwritten_frames == 0
            and self.error_frames == 0
            and self.frames_returned == self.frames + self.warmup_frames
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rebuilds_back_to_baseline"] = self.rebuilds_back_to_baseline
        data["rss_growth_kib"] = self.rss_growth_kib
        data["ok"] = self.ok
        return data


def _snapshot(frame: int, pp: SegmentationPostprocessor) -> tuple[Snapshot, str]:
    rss, in_use, source = measure_rss()
    return Snapshot(frame, rss, pp.live_gl_objects(), in_use), source


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


# ----------------------------------------------------------------------------- the run
def default_budget(frames: int, lose_every: int) -> int:
    """A loss budget that rebuilds every injected loss: ``max(3, frames // lose_every + 1)``."""
    return max(3, frames // lose_every + 1) if lose_every > 0 else 3


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
) -> SoakReport:
    """Run ``frames`` checked frames with a context loss before every ``lose_every``-th one.

    Args:
        frames: frames in the soak proper (after ``warmup`` checked warm-up frames).
        lose_every: destroy the GL context before soak frame ``i`` when ``i % lose_every == 0``
            and ``i > 0``; 0 never does.
        output_size: ``(width, height)`` of the masks.
        tensor_shape: ``(H, W, C)`` of the random logits (a new tensor every frame).
        activation: the processor's activation.
        seed: seed of the random tensors.
        budget: loss-budget capacity (:class:`~gpu_seg.resilience.LossBudget`); ``None`` gives
            :func:`default_budget`, enough to rebuild every injected loss instead of falling back.
        backoff: base delay in seconds of the rebuild backoff for losses in quick succession
            (:class:`~gpu_seg.resilience.Backoff`); ``None`` keeps the library default (50 ms,
            doubling up to 2 s).
        warmup: checked frames before the baseline figures (RSS, live GL objects) are taken.
        progress: called as ``progress(1, "losses=.. rebuilds=.. bad=..")`` after every soak frame.

    Returns:
        The :class:`SoakReport`. Exceptions from ``process()`` are recorded, not raised.
    """
    activation = Activation(str(activation).lower()) if not isinstance(activation, Activation) else activation
    width, height = (int(v) for v in output_size)
    shape = tuple(int(v) for v in tensor_shape)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if lose_every < 0:
        raise ValueError(f"lose_every must not be negative, got {lose_every}")
    if width < 1 or height < 1:
        raise ValueError(f"output size must be positive, got {width}x{height}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"tensor shape must be three positive sizes (H, W, C), got {tensor_shape}")
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1, got {warmup}")
    if budget is None:
        budget = default_budget(frames, lose_every)
    if budget < 0:
        raise ValueError(f"budget must not be negative, got {budget}")
    policy_backoff = Backoff() if backoff is None else Backoff(base=backoff)
    policy = RecoveryPolicy(budget=LossBudget(capacity=budget), backoff=policy_backoff)

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
    )
    rebuilt_pending = False

    def on_event(event: Event) -> None:
        nonlocal rebuilt_pending
        report.events[event.kind] = report.events.get(event.kind, 0) + 1
        if event.kind == "rebuilt":
            rebuilt_pending = True

    rng = np.random.default_rng(seed)
    size = (width, height)
    previous: tuple[Result, Result, np.ndarray] | None = None
    rss, in_use, _ = measure_rss()
    report.before = Snapshot(0, rss, 0, in_use)
    started = time.perf_counter()
    pp = SegmentationPostprocessor(
        activation, backend="auto", on_event=on_event, policy=policy, software_renderer="gl"
    )
    try:

        def frame(label: str) -> None:
            nonlocal previous, rebuilt_pending
            tensor = (rng.standard_normal(shape) * LOGIT_SCALE).astype(np.float32)
            try:
                result = pp.process(tensor, size)
            except Exception as exc:  # recorded: the soak reports, it does not stop
                report.error_frames += 1
                if len(report.errors) < 10:
                    report.errors.append(f"{label}: {type(exc).__name__}: {exc}")
                previous = None
                return
            report.frames_returned += 1
            if rebuilt_pending:
                rebuilt_pending = False
                report.gl_objects_after_rebuilds.append(pp.live_gl_objects())
                report.rss_after_rebuilds_kib.append(measure_rss()[0])
            expected = reference_postprocess(tensor, activation, size)
            problem, error, near = compare(result, expected, tensor, activation, size)
            report.worst_confidence_error = max(report.worst_confidence_error, error)
            report.near_tie_pixels += near
            if problem is not None:
                report.mismatched_frames += 1
                if len(report.first_mismatches) < 10:
                    report.first_mismatches.append(f"{label} ({result.backend}): {problem}")
            if previous is not None:  # the previous frame passed: its arrays must not have changed
                old_result, old_expected, old_tensor = previous
                old_problem, _, _ = compare(old_result, old_expected, old_tensor, activation, size)
                if old_problem is not None:
                    report.overwritten_frames += 1
                    if len(report.first_mismatches) < 10:
                        report.first_mismatches.append(
                            f"{label}: previous frame's result changed: {old_problem}"
                        )
            previous = (result, expected, tensor) if problem is None else None

        for w in range(warmup):
            frame(f"warm-up frame {w}")
        report.start, report.rss_source = _snapshot(0, pp)
        report.baseline_gl_objects = report.start.live_gl_objects
        for i in range(frames):
            if lose_every and i > 0 and i % lose_every == 0:
                try:
                    lose_context(pp)
                    report.losses += 1
                except GpuSegError:  # no owned context now (CPU fallback): nothing to lose
                    report.losses_skipped += 1
            frame(f"frame {i}")
            if i == frames // 2:
                report.middle, _ = _snapshot(i + 1, pp)
            if progress is not None:
                progress(
                    1,
                    f"losses={report.losses} rebuilds={pp.stats['rebuilds']} "
                    f"bad={report.mismatched_frames + report.error_frames}",
                )
        report.end, _ = _snapshot(frames, pp)
        stats = pp.stats
        report.context_losses = int(stats["context_losses"])  # type: ignore[call-overload]
        report.rebuilds = int(stats["rebuilds"])  # type: ignore[call-overload]
        report.gl_frames = int(stats["gl_frames"])  # type: ignore[call-overload]
        report.cpu_frames = int(stats["cpu_frames"])  # type: ignore[call-overload]
    finally:
        pp.close()
    report.live_gl_objects_after_close = pp.live_gl_objects()
    report.duration_s = time.perf_counter() - started
    return report
