"""The frame loop every soak shares: warm-up, losses, snapshots, events, the closing counts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from ...errors import GpuSegError
from ...postprocessor import Event, SegmentationPostprocessor
from ...resilience import Backoff, LossBudget, RecoveryPolicy
from ...testing import lose_context
from ...types import Activation
from .. import Progress
from ..memory import measure_rss
from ..parity import Parity, parity
from .report import FrameTimes, LoopReport, Snapshot, snapshot

__all__ = [
    "TIMELINE_POINTS",
    "Masks",
    "SoakLoop",
    "default_budget",
    "judge",
    "median_or_none",
    "recovery_policy",
]

#: RSS samples of ``rss_timeline`` over the soak frames.
TIMELINE_POINTS = 10


class Masks(Protocol):
    """What a frame returns: ``Result`` (processor) or ``SegmentationResult`` (segmenter)."""

    confidence_masks: np.ndarray | None
    category_mask: np.ndarray | None


def judge(
    result: Masks, expected: Masks, tensor: np.ndarray, activation: Activation, size: tuple[int, int]
) -> Parity:
    """``result``'s masks against ``expected``'s by the parity rule (:func:`gpu_seg.tools.parity.parity`)."""
    return parity(
        result.confidence_masks,
        result.category_mask,
        expected.confidence_masks,
        expected.category_mask,
        tensor,
        activation,
        size,
    )


def default_budget(frames: int, lose_every: int) -> int:
    """A loss budget that rebuilds every injected loss: ``max(3, frames // lose_every + 1)``."""
    return max(3, frames // lose_every + 1) if lose_every > 0 else 3


def recovery_policy(budget: int, backoff: float | None) -> RecoveryPolicy:
    """The soak's policy: a loss budget of ``budget``, a backoff base of ``backoff`` (None: default)."""
    if budget < 0:
        raise ValueError(f"budget must not be negative, got {budget}")
    return RecoveryPolicy(
        budget=LossBudget(capacity=budget), backoff=Backoff() if backoff is None else Backoff(base=backoff)
    )


class SoakLoop:
    """Runs ``warmup + frames`` frames with losses every ``lose_every``; subclasses make the frames.

    A subclass sets :attr:`pp` (the processor under test, created with ``on_event=self.on_event``)
    and implements :meth:`frame`, which calls :meth:`returned` once its frame came back and
    :meth:`mismatch` for a wrong one; :meth:`before_frame` may inject something before soak frame ``i``.
    """

    pp: SegmentationPostprocessor

    def __init__(self, report: LoopReport) -> None:
        self.report = report
        self.times = FrameTimes()
        self.rebuilt_pending = False
        self.trimmed = threading.Event()
        self.last_frame_end = time.monotonic()
        self.frames_run = 0  # soak frames (after warm-up) run so far

    # ----------------------------------------------------------------------------- callbacks
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

    def raised(self, label: str, exc: BaseException) -> None:
        """The frame raised: recorded, the soak goes on."""
        self.report.error_frames += 1
        self.record_error(label, exc)

    def mismatch(self, label: str, problem: str) -> None:
        self.report.mismatched_frames += 1
        if len(self.report.first_mismatches) < 10:
            self.report.first_mismatches.append(f"{label}: {problem}")

    def returned(self, backend: str, ms: float) -> None:
        """A frame came back from ``backend`` after ``ms``: counts, rebuild bookkeeping."""
        report, pp = self.report, self.pp
        report.frames_returned += 1
        self.times.add(backend, ms)
        report.max_live_gl_objects = max(report.max_live_gl_objects, pp.live_gl_objects())
        if self.rebuilt_pending:
            self.rebuilt_pending = False
            report.gl_objects_after_rebuilds.append(pp.live_gl_objects())
            report.rss_after_rebuilds_kib.append(self.rss_now())

    # ----------------------------------------------------------------------------- measuring
    def snapshot(self, frame: int) -> tuple[Snapshot, str]:
        """A :class:`Snapshot` of the processor now; its pause goes into ``measure_pause_s``."""
        started = time.perf_counter()
        try:
            return snapshot(frame, self.pp.stats)
        finally:
            self._paused(started)

    def rss_now(self) -> int:
        started = time.perf_counter()
        try:
            return measure_rss()[0]
        finally:
            self._paused(started)

    def _paused(self, started: float) -> None:
        pause = time.perf_counter() - started
        self.report.measure_pause_s = max(self.report.measure_pause_s, pause)

    # ----------------------------------------------------------------------------- injections
    def lose(self) -> None:
        try:
            lose_context(self.pp)
            self.report.losses += 1
        except GpuSegError:  # no owned context now (CPU fallback, released while idle): nothing to lose
            self.report.losses_skipped += 1

    def before_frame(self, i: int) -> None:
        """Before soak frame ``i``: a loss every ``lose_every`` frames."""
        lose_every = self.report.lose_every
        if lose_every and i > 0 and i % lose_every == 0:
            self.lose()

    def frame(self, label: str) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------------- the run
    def run(self, progress: Progress | None = None) -> None:
        report, pp = self.report, self.pp
        frames = report.frames
        for w in range(report.warmup_frames):
            self.frame(f"warm-up frame {w}")
        _wait_for_the_cpu_kernels()
        report.start, report.rss_source = self.snapshot(0)
        report.baseline_gl_objects = report.start.live_gl_objects
        report.rss_timeline.append((0, report.start.rss_kib))
        every = max(1, frames // TIMELINE_POINTS)
        for i in range(frames):
            self.before_frame(i)
            self.frame(f"frame {i}")
            self.frames_run = i + 1
            if i == frames // 2:
                report.middle, _ = self.snapshot(i + 1)
            if (i + 1) % every == 0 and i + 1 < frames:
                report.rss_timeline.append((i + 1, self.rss_now()))
            if progress is not None:
                progress(
                    1,
                    f"losses={report.losses} rebuilds={pp.stats['rebuilds']} "
                    f"bad={report.mismatched_frames + report.error_frames}",
                )
        report.end, _ = self.snapshot(frames)
        report.rss_timeline.append((frames, report.end.rss_kib))

    def finish(self) -> None:
        """The processor's counters and the latency medians into the report."""
        report, stats = self.report, self.pp.stats
        report.context_losses = int(stats["context_losses"])  # type: ignore[call-overload]
        report.rebuilds = int(stats["rebuilds"])  # type: ignore[call-overload]
        report.gl_frames = int(stats["gl_frames"])  # type: ignore[call-overload]
        report.cpu_frames = int(stats["cpu_frames"])  # type: ignore[call-overload]
        report.gl_frame_ms = self.times.median("gl")
        report.cpu_frame_ms = self.times.median("cpu")

    def execute(self, progress: Progress | None, started: float) -> None:
        """:meth:`run`, :meth:`finish`, :meth:`close` whatever happens; ``duration_s`` from ``started``
        (a ``time.perf_counter()`` value)."""
        try:
            self.run(progress)
            self.finish()
        except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM: the report so far goes with it
            self.report.interrupted_after = self.frames_run
            try:
                if self.report.start is not None:  # past warm-up: the growth up to now
                    self.report.end, _ = self.snapshot(self.frames_run)
                self.finish()
            finally:
                interrupt.partial_report = self.report  # type: ignore[attr-defined]
                raise
        finally:
            try:
                self.close()
            finally:
                self.report.duration_s = time.perf_counter() - started

    def close(self) -> None:
        """Close the processor; the GL objects it still holds go into the report."""
        self.pp.close()
        self.report.live_gl_objects_after_close = self.pp.live_gl_objects()


def median_or_none(samples: list[float]) -> float | None:
    """The median of ``samples``, None when there are none."""
    return float(np.median(samples)) if samples else None


def _wait_for_the_cpu_kernels() -> None:
    """Wait for the fast CPU path's warm-up, which a processor starts in the background: its
    kernels' machine code (about 20 MB of RSS, once per process) belongs in the baseline, not in
    the growth a soak reports."""
    from ... import cpu

    if cpu.available():
        cpu.warm_up()


@contextlib.contextmanager
def reported_if_interrupted(report: LoopReport) -> Iterator[None]:
    """A ``KeyboardInterrupt`` in the block (a soak being set up: its processor, its GL context)
    carries ``report`` as a soak interrupted after 0 frames, as :meth:`SoakLoop.execute` does later."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if getattr(interrupt, "partial_report", None) is None:
            report.interrupted_after = 0
            interrupt.partial_report = report  # type: ignore[attr-defined]
        raise
