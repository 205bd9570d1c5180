"""The performance goals, judged from the rows of one run (never from a separate run).

* GL at most 0.20x MediaPipe CPU's time for multiclass and selfie (both outputs), 0.33x for the
  deeplab category mask;
* GL faster than OpenCV for the category mask of every preset timed;
* GL confidence masks within 2.5x of the copy-bandwidth floor of the bytes they move;
* with the end-to-end preset: gpu_seg's ``ImageSegmenter.segment()`` (auto) at most 0.7x
  MediaPipe's, and MediaPipe's masks within the end-to-end parity goal of gpu_seg's (category
  identical on >= 99.99 % of pixels, mean |confidence diff| <= 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cases import PRESETS
from .end_to_end import E2E_PRESET
from .results import BenchRow

__all__ = ["evaluate_goals"]


def _row(
    rows: Sequence[BenchRow], preset: str, outputs: str, backend: str, content: str = "model-like"
) -> BenchRow | None:
    for row in rows:
        if (row.preset, row.outputs, row.backend, row.content) == (
            preset,
            outputs,
            backend,
            content,
        ) and row.timed:
            return row
    return None


def _goal(name: str, target: float, measured: float | None, passed: bool, detail: str) -> dict[str, Any]:
    """A goal as the report stores it: ``passed`` is None (n/a) when nothing was measured."""
    if measured is None:
        return {"name": name, "target": target, "measured": None, "passed": None, "detail": "n/a (not run)"}
    return {"name": name, "target": target, "measured": measured, "passed": passed, "detail": detail}


def _mediapipe_goal(rows: Sequence[BenchRow], preset: str, outputs: str, target: float) -> dict[str, Any]:
    gl = _row(rows, preset, outputs, "gl")
    ratio = gl.ratio_to_mediapipe if gl is not None else None
    name = f"{preset} {outputs}: GL / MediaPipe CPU <= {target:.2f}"
    if gl is None or ratio is None:
        return _goal(name, target, None, False, "")
    detail = f"GL {gl.median_ms:.2f} ms vs MediaPipe {gl.median_ms / ratio:.2f} ms: {ratio:.2f}x"
    if ratio > target:
        detail += f", needs {ratio / target:.2f}x faster"
    return _goal(name, target, ratio, ratio <= target, detail)


def _opencv_goal(rows: Sequence[BenchRow], preset: str) -> dict[str, Any]:
    gl, cv = _row(rows, preset, "category", "gl"), _row(rows, preset, "category", "opencv")
    name = f"{preset} category: GL faster than OpenCV"
    if gl is None or cv is None:
        return _goal(name, 1.0, None, False, "")
    ratio = gl.median_ms / cv.median_ms
    detail = f"GL {gl.median_ms:.2f} ms vs OpenCV {cv.median_ms:.2f} ms: {ratio:.2f}x"
    gl_noise, cv_noise = (_row(rows, preset, "category", k, "iid-noise") for k in ("gl", "opencv"))
    if gl_noise is not None and cv_noise is not None:
        detail += f"; iid noise: {gl_noise.median_ms:.2f} vs {cv_noise.median_ms:.2f} ms"
    return _goal(name, 1.0, ratio, ratio < 1.0, detail)


def _floor_goal(rows: Sequence[BenchRow], preset: str) -> dict[str, Any]:
    gl = _row(rows, preset, "confidence", "gl")
    name = f"{preset} confidence: GL within 2.5x of the copy-bandwidth floor"
    if gl is None or not gl.floor_ms:
        return _goal(name, 2.5, None, False, "")
    ratio = gl.median_ms / gl.floor_ms
    megabytes = gl.bytes_moved / 1e6
    detail = f"GL {gl.median_ms:.2f} ms vs floor {gl.floor_ms:.2f} ms ({megabytes:.1f} MB): {ratio:.1f}x"
    return _goal(name, 2.5, ratio, ratio <= 2.5, detail)


def evaluate_goals(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    """The goals, each with ``name``, ``target``, ``measured``, ``passed`` (True, False or None for
    not run) and ``detail``."""
    goals = [
        _mediapipe_goal(rows, "multiclass", "both", 0.20),
        _mediapipe_goal(rows, "selfie", "both", 0.20),
        _mediapipe_goal(rows, "deeplab", "category", 0.33),
    ]
    presets = sorted({r.preset for r in rows}, key=lambda p: list(PRESETS).index(p) if p in PRESETS else 99)
    goals += [_opencv_goal(rows, preset) for preset in presets if preset != E2E_PRESET]
    goals += [_floor_goal(rows, preset) for preset in presets if preset != E2E_PRESET]
    if E2E_PRESET in presets:
        goals += [_end_to_end_speed_goal(rows), _end_to_end_parity_goal(rows)]
    return goals


def _end_to_end_speed_goal(rows: Sequence[BenchRow]) -> dict[str, Any]:
    row = _row(rows, E2E_PRESET, "both", "e2e_auto", "photo")
    ratio = row.ratio_to_mediapipe if row is not None else None
    name = "end-to-end selfie 640x480 both: gpu_seg ImageSegmenter / MediaPipe ImageSegmenter <= 0.70"
    if row is None or ratio is None:
        return _goal(name, 0.7, None, False, "")
    detail = f"gpu_seg {row.median_ms:.2f} ms vs MediaPipe {row.median_ms / ratio:.2f} ms: {ratio:.2f}x"
    return _goal(name, 0.7, ratio, ratio <= 0.7, detail)


def _end_to_end_parity_goal(rows: Sequence[BenchRow]) -> dict[str, Any]:
    row = _row(rows, E2E_PRESET, "both", "e2e_mediapipe", "photo")
    check = (row.vs_reference or {}) if row is not None else {}
    name = "end-to-end parity: MediaPipe's masks vs gpu_seg's, category >= 99.99 %, mean conf diff <= 1e-5"
    if "category_mismatch_fraction" not in check or "confidence_mean_abs_error" not in check:
        return _goal(name, 0.9999, None, False, "")
    agree, mean = 1.0 - check["category_mismatch_fraction"], check["confidence_mean_abs_error"]
    detail = f"category identical on {100 * agree:.4f} % of pixels, mean |confidence diff| {mean:.2g}"
    return _goal(name, 0.9999, agree, agree >= 0.9999 and mean <= 1e-5, detail)
