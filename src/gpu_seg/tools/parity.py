"""How a result is judged against MediaPipe (or the reference): the project's acceptance bar.

* Confidence masks: ``|diff| <= 2e-5``; with ``activation="none"`` also ``<= 1e-5 * |expected|``
  (raw logits of large magnitude).
* Category mask: identical, except pixels whose top two align-corners-interpolated values differ by
  less than 1e-5 (near ties, where float rounding may pick either class). One-class thresholding
  must match exactly.

Used by ``gpu-seg verify``, ``gpu-seg soak``, ``gpu-seg bench`` and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..inputs import parse_activation
from ..sampling import align_corners_taps
from ..types import Activation

__all__ = [
    "CONFIDENCE_ATOL",
    "CONFIDENCE_RTOL_NONE",
    "NEAR_TIE",
    "Parity",
    "category_margin_at",
    "confidence_error",
    "far_from_ties",
    "parity",
]

CONFIDENCE_ATOL = 2e-5
#: Extra relative tolerance for ``activation="none"`` (raw logits of large magnitude).
CONFIDENCE_RTOL_NONE = 1e-5
#: Category pixels may differ where the top two interpolated values are closer than this.
NEAR_TIE = 1e-5


@dataclass
class Parity:
    """How a result compares with the expected (MediaPipe or reference) masks."""

    confidence_error: float = 0.0
    confidence_bad: int = 0
    mismatches: int = 0
    near_ties: int = 0
    far_mismatches: int = 0
    pixels: int = 0
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def category_margin_at(
    tensor: np.ndarray,
    activation: Activation | str,
    size: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """At output pixels ``(rows[i], cols[i])``: the gap between the top two interpolated values.

    The values are the align-corners interpolation of the raw logits that MediaPipe's category
    mask uses, computed in float64 (sigmoid applied for the sigmoid activation; softmax keeps the
    order). One channel: the distance of the value to 0.5.
    """
    activation = parse_activation(activation)
    width, height = size
    in_h, in_w, channels = tensor.shape
    tx, ty = align_corners_taps(in_w, width), align_corners_taps(in_h, height)
    y0, y1, t0 = ty.i0[rows], ty.i1[rows], ty.t[rows].astype(np.float64)[:, None]
    x0, x1, t1 = tx.i0[cols], tx.i1[cols], tx.t[cols].astype(np.float64)[:, None]

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return tensor[y, x].astype(np.float64)

    left = at(y0, x0) + (at(y1, x0) - at(y0, x0)) * t0
    right = at(y0, x1) + (at(y1, x1) - at(y0, x1)) * t0
    value = left + (right - left) * t1
    if activation is Activation.SIGMOID:
        with np.errstate(over="ignore"):
            value = 1.0 / (1.0 + np.exp(-value))
    if channels == 1:
        return np.abs(value[:, 0] - 0.5)
    top2 = np.sort(value, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def far_from_ties(
    differs: np.ndarray, tensor: np.ndarray, activation: Activation | str, size: tuple[int, int]
) -> int:
    """How many of the pixels marked in ``differs`` are not near ties (margin >= ``NEAR_TIE``)."""
    rows, cols = np.nonzero(differs)
    if rows.size == 0:
        return 0
    return int((category_margin_at(tensor, activation, size, rows, cols) >= NEAR_TIE).sum())


def confidence_error(
    got: Sequence[np.ndarray] | np.ndarray,
    want: np.ndarray,
    activation: Activation | str,
    channels: Sequence[int] | None = None,
    scale: float = 1.0,
) -> tuple[float, int]:
    """Worst ``|got / scale - want|`` and the count of values outside the confidence tolerance.

    ``got`` holds the planes of ``channels`` of ``want`` (default: all), one plane at a time in
    float64 so that large masks need no large temporaries. NaN differences count as infinite.
    """
    activation = parse_activation(activation)
    channels = list(range(len(want))) if channels is None else list(channels)
    worst, bad = 0.0, 0
    for plane, c in zip(got, channels, strict=True):
        reference = want[c].astype(np.float64)
        diff = np.abs(np.asarray(plane, np.float64) / scale - reference)
        diff[np.isnan(diff)] = np.inf
        allowed: np.ndarray | float = CONFIDENCE_ATOL
        if activation is Activation.NONE:
            allowed = np.maximum(CONFIDENCE_ATOL, CONFIDENCE_RTOL_NONE * np.abs(reference))
        bad += int((diff > allowed).sum())
        if diff.size:
            worst = max(worst, float(diff.max()))
    return worst, bad


def parity(
    confidence: np.ndarray | None,
    category: np.ndarray | None,
    expected_confidence: np.ndarray | None,
    expected_category: np.ndarray | None,
    tensor: np.ndarray,
    activation: Activation | str,
    size: tuple[int, int],
) -> Parity:
    """Judge masks against the expected ones with the tolerances above (never raises)."""
    activation = parse_activation(activation)
    report = Parity()
    problems = []
    if expected_confidence is not None:
        if confidence is None or confidence.shape != expected_confidence.shape:
            shape = None if confidence is None else confidence.shape
            problems.append(f"confidence masks {shape}, expected {expected_confidence.shape}")
            report.confidence_error = float("inf")
        else:
            report.confidence_error, report.confidence_bad = confidence_error(
                confidence, expected_confidence, activation
            )
            if report.confidence_bad:
                worst = report.confidence_error
                problems.append(f"{report.confidence_bad} confidence values off (worst |diff| {worst:.3g})")
    if expected_category is not None:
        if category is None or category.shape != expected_category.shape:
            shape = None if category is None else category.shape
            problems.append(f"category mask {shape}, expected {expected_category.shape}")
        else:
            differs = category != expected_category
            report.pixels = int(expected_category.size)
            report.mismatches = int(differs.sum())
            if report.mismatches:
                if tensor.shape[2] == 1:
                    report.far_mismatches = report.mismatches
                    problems.append(f"{report.mismatches} one-class category pixels differ")
                else:
                    report.far_mismatches = far_from_ties(differs, tensor, activation, size)
                    report.near_ties = report.mismatches - report.far_mismatches
                    if report.far_mismatches:
                        problems.append(f"{report.far_mismatches} category pixels differ away from near ties")
    report.problem = "; ".join(problems) or None
    return report
