"""A whole bench run: settings, the plan (cases x modes x backends), timing, and the report.

The report is a JSON-ready dict: ``metadata``, ``copy_bandwidth_gbps``, ``copy_bandwidth``,
``settings``, ``tensors``, ``cases`` (one :class:`~.results.BenchRow` dict per backend, case and
mode), ``goals`` and ``wall_s``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .. import Progress
from ..gl_report import describe_gl
from .backends import PEERS, backends_for
from .cases import NOISE_MODES, BenchCase
from .goals import evaluate_goals
from .gpu_seg_backends import ProcessorPool
from .metadata import environment, load_average
from .results import BenchRow, finish_rows
from .timing import PAUSE_S, measure_copy_bandwidth, time_cell

__all__ = ["BenchRun", "BenchSettings"]

DEFAULT_FRAMES = 10
DEFAULT_WARMUP = 2
DEFAULT_MAX_SECONDS = 3.0
DEFAULT_BANDWIDTH_MIB = 256


@dataclass(frozen=True)
class BenchSettings:
    """How every backend is timed (see :mod:`.timing`) and which backends run."""

    frames: int = DEFAULT_FRAMES
    warmup: int = DEFAULT_WARMUP
    max_seconds: float = DEFAULT_MAX_SECONDS
    pause_s: float = PAUSE_S
    seed: int = 0
    backends: tuple[str, ...] = PEERS
    noise: bool = True
    alloc: bool = True
    bandwidth_mib: int = DEFAULT_BANDWIDTH_MIB

    @classmethod
    def choose(
        cls,
        quick: bool = False,
        frames: int | None = None,
        warmup: int | None = None,
        max_seconds: float | None = None,
        bandwidth_mib: int | None = None,
        backends: Sequence[str] | None = None,
        seed: int = 0,
        noise: bool = True,
        alloc: bool = True,
    ) -> BenchSettings:
        """Settings where ``None`` takes the default; ``quick`` (a smoke run) changes the defaults
        to 3 frames, 1 warm-up frame, 1 s per backend, no pauses and a 64 MiB bandwidth buffer."""
        return cls(
            frames=frames or (3 if quick else DEFAULT_FRAMES),
            warmup=warmup if warmup is not None else (1 if quick else DEFAULT_WARMUP),
            max_seconds=max_seconds if max_seconds is not None else (1.0 if quick else DEFAULT_MAX_SECONDS),
            pause_s=0.0 if quick else PAUSE_S,
            seed=seed,
            backends=tuple(dict.fromkeys(backends)) if backends else PEERS,
            noise=noise,
            alloc=alloc,
            bandwidth_mib=bandwidth_mib or (64 if quick else DEFAULT_BANDWIDTH_MIB),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``settings`` of the report."""
        return {
            "frames": self.frames,
            "warmup": self.warmup,
            "max_seconds": self.max_seconds,
            "pause_s": self.pause_s,
            "seed": self.seed,
            "backends": list(self.backends),
            "noise_modes": list(NOISE_MODES) if self.noise else [],
        }


class BenchRun:
    """One run: created with the environment measured (GL, metadata, copy bandwidth) and the plan
    made; :meth:`run` times the plan and returns the report."""

    def __init__(self, cases: list[BenchCase], settings: BenchSettings) -> None:
        self._started = time.perf_counter()
        self.cases = cases
        self.settings = settings
        self.gl_info = describe_gl() if "gl" in settings.backends else {"error": "not requested"}
        self.metadata = environment(self.gl_info)
        self.bandwidth = measure_copy_bandwidth(settings.bandwidth_mib)
        #: (case, output mode, backend keys) in the order they are timed.
        self.plan = [
            (case, mode, backends_for(case, mode, settings.backends, settings.alloc))
            for case in cases
            for mode in case.modes
        ]

    @property
    def steps(self) -> int:
        """Frames the run reports to its progress callback in all."""
        return sum(len(keys) for _, _, keys in self.plan) * (self.settings.warmup + self.settings.frames)

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        s = self.settings
        pool = ProcessorPool()
        rows: list[BenchRow] = []
        try:
            for case, mode, keys in self.plan:
                rows += time_cell(
                    case, mode, keys, pool, s.frames, s.warmup, s.max_seconds, progress, s.pause_s
                )
                pool.close()  # each processor's textures are sized for this cell: free them now
        except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM: the cells timed go with it
            interrupt.partial_report = self._report(rows, interrupted=True)  # type: ignore[attr-defined]
            raise
        finally:
            pool.close()
        return self._report(rows)

    def _report(self, rows: list[BenchRow], interrupted: bool = False) -> dict[str, Any]:
        """The report of the cells in ``rows`` (those timed before an interrupt, or all)."""
        s = self.settings
        finish_rows(rows, self.bandwidth["gbps"])
        self.metadata["load_average_end"] = load_average()
        return {
            "interrupted": interrupted,
            "metadata": self.metadata,
            "copy_bandwidth_gbps": self.bandwidth["gbps"],
            "copy_bandwidth": self.bandwidth,
            "settings": s.to_dict(),
            "tensors": [case.to_dict() for case in self.cases],
            "cases": [asdict(r) for r in rows],
            "goals": evaluate_goals(rows),
            "wall_s": time.perf_counter() - self._started,
        }
