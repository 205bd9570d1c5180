"""Timing: one cell (a case in one output mode) backend after backend, statistics, copy bandwidth.

Each backend runs one untimed check frame (when it is prepared), ``warmup`` frames, then up to
``frames`` timed frames back to back, stopping early once it has 3 frames and has spent
``max_seconds``. Before each backend the bench sleeps ``pause`` seconds, so that the previous
backend's worker threads stop spinning.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import numpy as np

from ...reference import reference_postprocess
from .. import Progress
from ..messages import first_line
from .backends import make_runner
from .cases import MODES, BenchCase
from .gpu_seg_backends import ProcessorPool
from .results import BenchRow, compare_to_reference, new_row
from .runner import BackendUnavailableError, Runner

__all__ = ["PAUSE_S", "measure_copy_bandwidth", "summarize", "time_cell"]

#: Pause before each backend's frames: OpenMP/pthreadpool/llvmpipe workers of the previous one
#: spin for a while after their last job and would steal this backend's cores.
PAUSE_S = 0.2


def summarize(samples_ms: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range (linear-interpolated percentiles) of ``samples_ms``."""
    values = np.asarray(samples_ms, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(median), float(q3 - q1)


def measure_copy_bandwidth(mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """The machine's memory bandwidth as seen by ``np.copyto`` of a ``mib`` MiB buffer.

    Returns ``gbps`` (bytes read + bytes written per second / 1e9, median of ``repeats`` copies after
    one warm-up copy), ``median_ms``, ``buffer_mib`` and ``repeats``.
    """
    n = max(1, int(mib)) << 20
    src = np.ones(n, np.uint8)
    dst = np.zeros(n, np.uint8)
    np.copyto(dst, src)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "gbps": 2 * n / median / 1e9,
        "median_ms": median * 1e3,
        "buffer_mib": float(mib),
        "repeats": repeats,
    }


class _Steps:
    """One backend's share of the progress: counts the frames it reported."""

    def __init__(self, progress: Progress | None, note: str) -> None:
        self.progress, self.note, self.done = progress, note, 0

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(n, self.note)

    def finish(self, total: int) -> None:
        """Report the steps up to ``total`` that the backend did not run."""
        if self.done < total:
            self(total - self.done)


def _time_frames(runner: Runner, frames: int, warmup: int, max_seconds: float, step: _Steps) -> list[float]:
    """``warmup`` untimed frames, then up to ``frames`` timed ones; milliseconds per timed frame.

    ``step()`` after every frame. Exceptions propagate (the caller records them).
    """
    for _ in range(warmup):
        runner()
        step()
    samples: list[float] = []
    spent = 0.0
    for _ in range(frames):
        start = time.perf_counter()
        runner()
        elapsed = time.perf_counter() - start
        samples.append(elapsed * 1e3 / runner.frames_per_call)
        spent += elapsed
        step()
        if max_seconds and spent > max_seconds and len(samples) >= min(3, frames):
            break
    return samples


def time_cell(
    case: BenchCase,
    mode: str,
    keys: list[str],
    pool: ProcessorPool,
    frames: int,
    warmup: int,
    max_seconds: float,
    progress: Progress | None = None,
    pause: float = PAUSE_S,
) -> list[BenchRow]:
    """Time every backend in ``keys`` on ``case`` in output ``mode``, one after the other.

    Returns one row per key, in order; a backend that cannot run gets a row with ``unavailable``.
    ``progress`` is advanced by ``warmup + frames`` steps per backend, whether it ran them all or not.
    """
    per_backend = warmup + frames
    note = f"{case.preset} {case.content} {mode}"
    rows: dict[str, BenchRow] = {}
    reference: tuple[np.ndarray | None, np.ndarray | None] | None = None

    # One backend at a time, from its set-up to its check, so that only one backend's masks are
    # alive at once (deeplab's float32 confidence masks are 174 MB per copy).
    for key in keys:
        steps = _Steps(progress, note)
        gc.collect()
        time.sleep(pause)  # let the previous backend's worker threads stop spinning
        try:
            runner = make_runner(pool, key, case, mode)
        except BackendUnavailableError as exc:
            rows[key] = new_row(case, mode, key, unavailable=str(exc))
            steps.finish(per_backend)
            continue
        row = rows[key] = new_row(case, mode, key, note=runner.note)
        try:
            try:
                samples = _time_frames(runner, frames, warmup, max_seconds, steps)
            except Exception as exc:
                row.unavailable = f"failed while timing: {first_line(exc)}"
                continue
            finally:
                steps.finish(per_backend)
            if not samples:
                continue
            row.samples_ms = [round(s, 4) for s in samples]
            row.samples = len(samples)
            row.median_ms, row.iqr_ms = summarize(samples)
            row.bytes_moved = case.tensor.nbytes + runner.bytes_out
            if key == "reference":
                continue
            # Agreement with MediaPipe's semantics (the gpu_seg CPU reference), from the last frame.
            try:
                if reference is None:
                    result = reference_postprocess(
                        case.tensor, case.activation, case.output_size, *MODES[mode]
                    )
                    reference = (result.confidence_masks, result.category_mask)
                row.vs_reference = compare_to_reference(runner.outputs(), reference, case, runner.channels)
            except Exception as exc:  # a check must not lose the timings
                row.vs_reference = {"error": first_line(exc)}
        finally:
            try:
                runner.close()
            except Exception:
                pass
            del runner
    gc.collect()
    return [rows[key] for key in keys]
