"""Sampling tables of one (tensor size, output size) pair, from :mod:`gpu_seg.sampling`, cached.

The arrays are read-only (they are shared between frames and threads) and always of the same
dtypes, so the numba kernels see one type signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..sampling import SINGLE_TAP, align_corners_taps, identity_taps, resize_taps

__all__ = ["CategoryGeometry", "ResizeGeometry", "category_geometry", "resize_geometry"]

#: Geometries kept per kind; an application uses one or a few output sizes.
CACHED_GEOMETRIES = 16


def _frozen(array: np.ndarray, dtype: type) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class ResizeGeometry:
    """OpenCV ``INTER_LINEAR`` taps (half-pixel centres) on both axes; ``identity``: sizes equal.

    ``pairs``: the columns ``x < pairs`` have two horizontal taps, the others (a suffix: the
    right border) one; there ``xi1`` repeats ``xi0``.
    """

    xi0: np.ndarray
    xi1: np.ndarray
    xw0: np.ndarray
    xw1: np.ndarray
    pairs: int
    yi0: np.ndarray
    yi1: np.ndarray
    yw0: np.ndarray
    yw1: np.ndarray
    identity: bool

    def kernel_args(self) -> tuple:
        return (
            *(self.xi0, self.xi1, self.xw0, self.xw1, self.pairs),
            *(self.yi0, self.yi1, self.yw0, self.yw1, self.identity),
        )


@lru_cache(maxsize=CACHED_GEOMETRIES)
def resize_geometry(in_h: int, in_w: int, width: int, height: int) -> ResizeGeometry:
    """Taps of the confidence-mask resize ``(in_h, in_w) -> (height, width)``."""
    identity = (in_w, in_h) == (width, height)
    if identity:
        tx, ty = identity_taps(width), identity_taps(height)
    else:
        tx, ty = resize_taps(in_w, width, "x"), resize_taps(in_h, height, "y")
    single = tx.i1 == SINGLE_TAP
    pairs = int(np.argmax(single)) if single.any() else width
    if not single[pairs:].all():
        raise AssertionError("single-tap columns must be the right border")
    i32, f32 = np.int32, np.float32
    return ResizeGeometry(
        _frozen(tx.i0, i32),
        _frozen(np.where(single, tx.i0, tx.i1), i32),
        _frozen(tx.w0, f32),
        _frozen(tx.w1, f32),
        pairs,
        _frozen(ty.i0, i32),
        _frozen(ty.i1, i32),
        _frozen(ty.w0, f32),
        _frozen(ty.w1, f32),
        identity,
    )


@dataclass(frozen=True)
class CategoryGeometry:
    """Align-corners taps on both axes, and the output columns grouped by their first input column.

    ``runs`` (n, 3) int64: ``(cx, start, end)``: output columns ``start <= x < end`` have
    ``xi0 == cx``; consecutive, covering every column once.
    """

    xi0: np.ndarray
    xi1: np.ndarray
    xt: np.ndarray
    yi0: np.ndarray
    yi1: np.ndarray
    yt: np.ndarray
    runs: np.ndarray


@lru_cache(maxsize=CACHED_GEOMETRIES)
def category_geometry(in_h: int, in_w: int, width: int, height: int) -> CategoryGeometry:
    """Taps of the category mask's align-corners interpolation ``(in_h, in_w) -> (height, width)``."""
    tx, ty = align_corners_taps(in_w, width), align_corners_taps(in_h, height)
    # The kernel reads, for a pixel of the run of input column cx, columns cx and min(cx + 1, W - 1).
    if not np.isin(tx.i1 - tx.i0, (0, 1)).all() or tx.i1.max() > in_w - 1:
        raise AssertionError("align-corners taps must read neighbouring input columns")
    starts = np.flatnonzero(np.diff(tx.i0, prepend=-1))
    ends = np.append(starts[1:], width)
    runs = np.stack([tx.i0[starts].astype(np.int64), starts, ends], axis=1)
    i32, f32 = np.int32, np.float32
    return CategoryGeometry(
        _frozen(tx.i0, i32),
        _frozen(tx.i1, i32),
        _frozen(tx.t, f32),
        _frozen(ty.i0, i32),
        _frozen(ty.i1, i32),
        _frozen(ty.t, f32),
        _frozen(runs, np.int64),
    )
