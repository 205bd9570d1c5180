"""How parity with MediaPipe is judged (issue 2's acceptance bar), in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpu_seg.sampling import align_corners_taps

CONFIDENCE_ATOL = 2e-5
CONFIDENCE_RTOL_NONE = 1e-5  # unactivated logits of large magnitude
NEAR_TIE = 1e-5


@dataclass
class Comparison:
    confidence_error: float
    mismatches: int
    near_tie_mismatches: int
    pixels: int


def category_margin(tensor: np.ndarray, activation: str, size: tuple[int, int]) -> np.ndarray:
    """Per output pixel: gap between the top two interpolated values (one class: distance to 0.5).

    Computed in float64 from the align-corners interpolation of the raw logits (semantics doc §4).
    """
    width, height = size
    in_h, in_w, channels = tensor.shape
    tx, ty = align_corners_taps(in_w, width), align_corners_taps(in_h, height)
    t = tensor.astype(np.float64)
    y0, y1, t0 = ty.i0[:, None], ty.i1[:, None], ty.t.astype(np.float64)[:, None, None]
    x0, x1, t1 = tx.i0[None, :], tx.i1[None, :], tx.t.astype(np.float64)[None, :, None]
    left = t[y0, x0] + (t[y1, x0] - t[y0, x0]) * t0
    right = t[y0, x1] + (t[y1, x1] - t[y0, x1]) * t0
    value = left + (right - left) * t1
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            value = 1.0 / (1.0 + np.exp(-value))
    if channels == 1:
        return np.abs(value[..., 0] - 0.5)
    top2 = np.sort(value, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def compare(result, expected, tensor: np.ndarray, activation: str, size: tuple[int, int]) -> Comparison:
    """Check ``result`` against ``expected`` (MediaPipe) and return the figures; asserts the bar."""
    error = 0.0
    if expected.confidence_masks is not None:
        got, want = result.confidence_masks, expected.confidence_masks
        assert got.shape == want.shape and got.dtype == np.float32
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        allowed = np.full(diff.shape, CONFIDENCE_ATOL)
        if activation == "none":
            allowed = np.maximum(allowed, CONFIDENCE_RTOL_NONE * np.abs(want))
        bad = ~(diff <= allowed)
        assert not bad.any(), f"{int(bad.sum())} confidence values off; worst |diff| {diff.max():.3g}"
        error = float(diff.max()) if diff.size else 0.0
    mismatches = near = pixels = 0
    if expected.category_mask is not None:
        got, want = result.category_mask, expected.category_mask
        assert got.shape == want.shape and got.dtype == np.uint8
        differs = got != want
        mismatches = int(differs.sum())
        pixels = int(want.size)
        if mismatches:
            margin = category_margin(tensor, activation, size)
            if tensor.shape[2] == 1:
                assert not differs.any(), "one-class threshold semantics must be exact"
            far = differs & (margin >= NEAR_TIE)
            assert not far.any(), f"{int(far.sum())} category pixels differ away from near ties"
            near = mismatches
    return Comparison(error, mismatches, near, pixels)
