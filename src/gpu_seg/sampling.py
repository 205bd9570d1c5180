"""Sampling maps: which source texels and weights each output row/column uses.

Both backends take their indices and weights from here, computed on the CPU in the precision
MediaPipe uses, so the GL shaders never recompute a mapping in a different precision.

Two conventions, as in MediaPipe's CPU path (see ``../shared/docs/mediapipe-postprocessing.md``):

* :func:`resize_taps`: OpenCV ``INTER_LINEAR`` (generic, non-IPP path), used for the confidence
  masks. Half-pixel centres: ``src = (dst + 0.5) * in / out - 0.5``, computed in float64 and
  rounded to float32. Horizontal taps are clamped to ``[0, in - 1]`` with the weight moved onto the
  border texel (left border: two taps with weights ``(1, 0)``; right border: one tap). Vertical
  taps keep their fractional weights and clamp only the row indices, as OpenCV does.
* :func:`align_corners_taps`: the category-mask mapping ``src = dst * (in - 1) / (out - 1)`` in
  float32 (corner centres map to corner centres). An output dimension of 1 (a division by zero
  in MediaPipe) samples source index 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AlignCornersTaps", "ResizeTaps", "align_corners_taps", "identity_taps", "resize_taps"]

#: Marks a single-tap entry in :attr:`ResizeTaps.i1`: the output equals source ``i0`` exactly.
SINGLE_TAP = -1


@dataclass(frozen=True)
class ResizeTaps:
    """Two-tap linear weights along one axis: ``out = S[i0] * w0 + S[i1] * w1``.

    Where ``i1 == SINGLE_TAP`` the output is ``S[i0]`` itself (no multiplication).
    Arrays have one entry per output row or column.
    """

    i0: np.ndarray  # int32
    i1: np.ndarray  # int32
    w0: np.ndarray  # float32
    w1: np.ndarray  # float32


@dataclass(frozen=True)
class AlignCornersTaps:
    """Align-corners lerp along one axis: ``out = S[i0] + (S[i1] - S[i0]) * t``."""

    i0: np.ndarray  # int32
    i1: np.ndarray  # int32
    t: np.ndarray  # float32


def identity_taps(n: int) -> ResizeTaps:
    """Taps that copy: used on both axes when the output size equals the tensor size."""
    index = np.arange(n, dtype=np.int32)
    return ResizeTaps(
        index,
        np.full(n, SINGLE_TAP, np.int32),
        np.ones(n, np.float32),
        np.zeros(n, np.float32),
    )


def resize_taps(in_size: int, out_size: int, axis: str) -> ResizeTaps:
    """OpenCV ``INTER_LINEAR`` taps along ``axis`` (``"x"`` or ``"y"``) for ``in_size -> out_size``.

    MediaPipe skips the resize only when *both* output dimensions equal the tensor's; callers use
    :func:`identity_taps` then. When only one axis keeps its size, OpenCV still resamples it with
    weights (1, 0), which matters for NaN/inf neighbours (NaN * 0 is NaN).
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    scale = 1.0 / (out_size / in_size)  # float64, as OpenCV computes it
    pos = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(pos).astype(np.int64)
    frac = (pos - start.astype(np.float32)).astype(np.float32)
    if axis == "x":
        # OpenCV clamps the left border first, then tests the right border on the clamped index.
        left = start < 0
        start[left], frac[left] = 0, 0.0
        right = start >= in_size - 1
        start[right], frac[right] = in_size - 1, 0.0
        i0 = start
        i1 = np.where(right, SINGLE_TAP, start + 1)
    else:
        i0 = np.clip(start, 0, in_size - 1)
        i1 = np.clip(start + 1, 0, in_size - 1)
    w0 = (np.float32(1.0) - frac).astype(np.float32)
    return ResizeTaps(i0.astype(np.int32), i1.astype(np.int32), w0, frac.astype(np.float32))


def align_corners_taps(in_size: int, out_size: int) -> AlignCornersTaps:
    """MediaPipe's category-mask mapping for one axis, in float32."""
    if out_size == 1:
        scale = np.float32(0.0)
    else:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    pos = np.arange(out_size, dtype=np.float32) * scale
    floor = np.maximum(np.floor(pos), np.float32(0.0))
    ceil = np.minimum(np.ceil(pos), np.float32(in_size - 1))
    t = np.clip(pos - floor, np.float32(0.0), np.float32(1.0)).astype(np.float32)
    return AlignCornersTaps(floor.astype(np.int32), ceil.astype(np.int32), t)
