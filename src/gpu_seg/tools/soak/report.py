"""What a soak run measured: memory snapshots, idle periods, frame latencies, the report itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..memory import measure_rss

__all__ = ["FrameTimes", "IdlePeriod", "LoopReport", "Snapshot", "SoakReport", "snapshot"]


@dataclass
class Snapshot:
    """Resident memory and the processor's GL holdings at one point of the run.

    Taken after ``gc.collect()`` and glibc's ``malloc_trim(0)``
    (see :func:`gpu_seg.tools.memory.measure_rss`).
    ``malloc_in_use_kib`` is what the C allocator has handed out (glibc ``mallinfo2``; ``None``
    elsewhere). ``programs`` and ``gpu_memory`` are the processor's ``stats["programs"]`` and
    ``stats["gpu_memory"]`` (``None`` where the driver says nothing, as on llvmpipe; a dict of KiB
    figures on NVIDIA).
    """

    frame: int
    rss_kib: int
    live_gl_objects: int
    malloc_in_use_kib: int | None = None
    programs: int = 0
    gpu_memory: dict[str, Any] | None = None


def snapshot(frame: int, stats: Any | None = None) -> tuple[Snapshot, str]:
    """A :class:`Snapshot` at soak frame ``frame`` from a processor's ``stats`` (None: no processor)
    and the source of the RSS figure."""
    rss, in_use, source = measure_rss()
    if stats is None:
        return Snapshot(frame, rss, 0, in_use), source
    return (
        Snapshot(
            frame,
            rss,
            int(stats["live_gl_objects"]),
            in_use,
            int(stats["programs"]),
            stats["gpu_memory"],
        ),
        source,
    )


@dataclass
class IdlePeriod:
    """One idle period of the idle mode: the processor got no frame for a while.

    ``before``: after the last frame before the pause; ``released``: once the release happened
    (right after ``pp.trim()``, or when the automatic release's ``trimmed`` event arrived);
    ``woken``: after the first frame that followed. ``release_s`` is how long after the last frame
    the release was seen (None: it never came); ``wake_frame_ms`` the wake-up frame's latency.
    """

    index: int
    frame: int
    method: str
    before: Snapshot
    released: Snapshot | None = None
    woken: Snapshot | None = None
    release_s: float | None = None
    wake_frame_ms: float | None = None
    wake_backend: str | None = None


class FrameTimes:
    """Latency of every ``process()`` call in ms, by the backend the frame ran on."""

    def __init__(self) -> None:
        self.by_backend: dict[str, list[float]] = {}

    def add(self, backend: str, ms: float) -> None:
        self.by_backend.setdefault(backend, []).append(ms)

    def median(self, backend: str) -> float | None:
        samples = self.by_backend.get(backend)
        return float(np.median(samples)) if samples else None


@dataclass(kw_only=True)
class LoopReport:
    """What every soak run counts: frames, losses, rebuilds, checks, memory, live GL objects."""

    frames: int
    lose_every: int
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
    #: ``(soak frame, VmRSS KiB)`` about ten times over the run, the first after warm-up.
    rss_timeline: list[tuple[int, int]] = field(default_factory=list)
    #: Most live GL objects seen after any frame (warm-up included).
    max_live_gl_objects: int = 0
    #: Median latency of the frames that ran on GL / on the CPU (None: no such frame).
    gl_frame_ms: float | None = None
    cpu_frame_ms: float | None = None
    #: The longest pause the soak made between frames to measure memory (``gc.collect()`` and
    #: ``malloc_trim``): 0.1-0.5 s in a process with large libraries loaded.
    measure_pause_s: float = 0.0
    #: Soak frames run when the soak was interrupted (Ctrl-C, SIGTERM); None: it ran them all.
    interrupted_after: int | None = None

    @property
    def rebuilds_back_to_baseline(self) -> bool | None:
        """Every rebuild left exactly the warm-up count of live GL objects after its frame."""
        return all(n == self.baseline_gl_objects for n in self.gl_objects_after_rebuilds)

    @property
    def rss_growth_kib(self) -> int:
        """VmRSS at the end minus VmRSS after warm-up."""
        if self.start is None or self.end is None:
            return 0
        return self.end.rss_kib - self.start.rss_kib

    @property
    def frames_ok(self) -> bool:
        """No mismatched frame, no exception, every frame returned."""
        return (
            self.mismatched_frames == 0
            and self.error_frames == 0
            and self.frames_returned == self.frames + self.warmup_frames
        )

    @property
    def ok(self) -> bool:
        """Every frame returned and right, and some on GL (a soak that never had a GL context
        tested nothing of what it is for)."""
        return self.frames_ok and self.gl_frames > 0 and self.interrupted_after is None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rebuilds_back_to_baseline"] = self.rebuilds_back_to_baseline
        data["rss_growth_kib"] = self.rss_growth_kib if self.start and self.end else None
        data["ok"] = self.ok
        return data


@dataclass(kw_only=True)
class SoakReport(LoopReport):
    """Everything a tensor soak run measured (``to_dict`` gives the ``--json`` document)."""

    output_size: tuple[int, int]
    tensor_shape: tuple[int, int, int]
    activation: str
    seed: int
    overwritten_frames: int = 0
    # Output-size churn mode: a new seeded random output size every frame.
    churn: bool = False
    churn_min_size: tuple[int, int] | None = None
    churn_max_size: tuple[int, int] | None = None
    distinct_output_sizes: int = 0
    # Idle mode: every ``idle_every`` frames the processor sits ``idle_seconds`` without frames.
    idle_seconds: float | None = None
    idle_every: int = 0
    idle_release: str | None = None
    idle_periods: list[IdlePeriod] = field(default_factory=list)
    # Fallback mode: the loss budget is exhausted and the context lost before soak frame
    # ``fallback_at``; that frame is the first CPU frame.
    fallback_at: int | None = None
    # In-flight mode: frames submitted and collected one frame later, every other one as a view.
    in_flight: bool = False
    #: The processor's gl_passes option ("auto": the pipeline's choice per renderer).
    gl_passes: str = "auto"
    fallback_frame_backend: str | None = None
    first_fallback_frame_ms: float | None = None
    #: Median of the CPU frames after the first fallback frame.
    steady_cpu_frame_ms: float | None = None

    @property
    def rebuilds_back_to_baseline(self) -> bool | None:
        """As for every soak; None with ``churn`` (the pools then hold whatever sizes came last).

        In flight, the readback ring holds between two and four buffers depending on what was
        queued when it was counted: a rebuild may leave fewer objects than warm-up, never more.
        """
        if self.churn:
            return None
        if self.in_flight:
            return all(n <= self.baseline_gl_objects for n in self.gl_objects_after_rebuilds)
        return super().rebuilds_back_to_baseline

    @property
    def unplanned_releases(self) -> int:
        """Releases (``trimmed`` events) outside the idle periods: an automatic release that fired
        while the soak paused between frames to measure memory (choose a longer ``--idle``)."""
        planned = sum(1 for p in self.idle_periods if p.released is not None)
        return max(0, self.events.get("trimmed", 0) - planned)

    @property
    def first_fallback_ratio(self) -> float | None:
        """First fallback frame / steady-state CPU frame (None when not measured)."""
        if self.first_fallback_frame_ms is None or not self.steady_cpu_frame_ms:
            return None
        return self.first_fallback_frame_ms / self.steady_cpu_frame_ms

    @property
    def idle_releases_ok(self) -> bool:
        """Every idle period saw its release, after which the processor held no pooled GL object
        and no program (only the context after ``trim``; nothing after a context release), and its
        wake-up frame ran on GL (periods ending at or after a forced fallback's frame: on the CPU;
        the fallback is forced after the idle period before the same frame)."""
        keeps_context = self.idle_release in ("trim", "auto")
        limit = 1 if keeps_context else 0

        def woken_on(period: IdlePeriod) -> str:
            falling_back = self.fallback_at is not None and period.frame >= self.fallback_at
            return "cpu" if falling_back else "gl"

        return all(
            p.released is not None
            and p.released.live_gl_objects <= limit
            and p.released.programs == 0
            and p.wake_backend == woken_on(p)
            for p in self.idle_periods
        )

    @property
    def ok(self) -> bool:
        """Every frame returned and right and some on GL, no result overwritten, every idle
        release seen and complete, and in the fallback mode the fallback frame on the CPU."""
        return (
            super().ok
            and self.overwritten_frames == 0
            and self.idle_releases_ok
            and (self.fallback_at is None or self.fallback_frame_backend == "cpu")
        )

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["first_fallback_ratio"] = self.first_fallback_ratio
        data["idle_releases_ok"] = self.idle_releases_ok
        data["unplanned_releases"] = self.unplanned_releases
        return data
