"""numba kernels of the category mask: texel classes, the per-cell shortcut, per-pixel argmax.

Conventions (see :mod:`gpu_seg.reference`): align-corners bilinear interpolation of the raw
logits, vertical lerp first (``a + (b - a) * t``), then the horizontal lerp of the two column
results; first maximum with ``std::max_element`` NaN semantics; one channel: 0 where the value is
above the threshold, else 255. Kernels work on bands of output rows, with ``nogil=True`` and no
``fastmath``.

The shortcut (exactness argument). An output pixel whose align-corners taps start at input texel
``(cy, cx)`` reads only the four texels of the cell ``{cy, cy + 1} x {cx, cx + 1}`` (clamped).
Let every finite corner value satisfy ``|v| <= B`` (``B >= 1``), and let channel ``k`` lead every
other channel by more than ``MARGIN * B`` at each of the four corners. The exact interpolated
values are convex combinations of the corner values, so ``s_k - s_j > MARGIN * B`` exactly. Each
float32 lerp ``a + (b - a) * t`` errs by at most ``u * (2 |b - a| t + |result|) <= 5 B u``
(``u = 2**-24``), so after the three lerps every channel is within ``11 B u`` of its exact value;
the lead itself is computed in float32 (another ``2 B u``), so the computed gap exceeds
``MARGIN * B - 24 B u > 0`` for ``MARGIN = 2**-14``: the computed first maximum is ``k``, with
no tie. The same argument with the threshold in place of ``s_j``
covers one channel. ``B`` is taken over the whole cell: a per-texel margin is not enough when one
corner is much larger than another (``b - a`` then rounds by more than the small corner's gap).
Non-finite values, or values above ``HUGE`` (``b - a`` could overflow), make a texel unsure, and
such cells use the per-pixel path. Multi-class sigmoid is never shortcut: float32 sigmoid maps
distinct logits to equal probabilities (saturation), which turns a clear lead into a tie.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MARGIN = np.float32(1.0 / 16384.0)
HUGE = np.float32(1.0e30)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_NEG_INF = np.float32(-np.inf)


@njit(cache=True, nogil=True, inline="always")
def _lerp(a, b, t):  # pragma: no cover - compiled
    return a + (b - a) * t


# ----------------------------------------------------------------------------- texel classes
@njit(cache=True, nogil=True)
def texel_classes(tensor, threshold, y0, y1, klass, gap, scale):  # pragma: no cover - compiled
    """For texels of rows ``y0 <= y < y1``: class, lead and magnitude, used by :func:`cell_row`.

    ``klass``: first maximum (one channel: 0 above ``threshold``, else 255), or -1 when a value is
    non-finite or above ``HUGE``. ``gap``: lead of that class over every other channel (one
    channel: distance to the threshold). ``scale``: ``max(1, max |v|)``.
    """
    channels = tensor.shape[2]
    for y in range(y0, y1):
        for x in range(tensor.shape[1]):
            v = tensor[y, x, 0]
            if not abs(v) <= HUGE:
                klass[y, x] = -1
                continue
            if channels == 1:
                klass[y, x] = 0 if v > threshold else 255
                gap[y, x] = abs(v - threshold)
                scale[y, x] = max(_ONE, abs(v))
                continue
            best = v
            index = 0
            runner = _NEG_INF
            biggest = max(_ONE, abs(v))
            unsure = False
            for c in range(1, channels):
                v = tensor[y, x, c]
                if not abs(v) <= HUGE:
                    unsure = True
                    break
                biggest = max(biggest, abs(v))
                if best < v:
                    runner = best  # the previous best leads every earlier channel
                    best = v
                    index = c
                elif runner < v:
                    runner = v
            if unsure:
                klass[y, x] = -1
                continue
            klass[y, x] = index
            gap[y, x] = best - runner
            scale[y, x] = biggest


@njit(cache=True, nogil=True)
def cell_row(klass, gap, scale, cy, cells):  # pragma: no cover - compiled
    """``cells[cx]``: the class every output pixel of cell ``(cy, cx)`` is sure to get, or -1."""
    h, w = klass.shape
    cy1 = min(cy + 1, h - 1)
    for cx in range(w):
        cx1 = min(cx + 1, w - 1)
        k = klass[cy, cx]
        if k < 0 or klass[cy, cx1] != k or klass[cy1, cx] != k or klass[cy1, cx1] != k:
            cells[cx] = -1
            continue
        lead = min(min(gap[cy, cx], gap[cy, cx1]), min(gap[cy1, cx], gap[cy1, cx1]))
        size = max(max(scale[cy, cx], scale[cy, cx1]), max(scale[cy1, cx], scale[cy1, cx1]))
        cells[cx] = k if lead > MARGIN * size else -1


# ----------------------------------------------------------------------------- per-pixel path
@njit(cache=True, nogil=True, inline="always")
def _vertical(tensor, y0, y1, t0, x, dst):  # pragma: no cover - compiled
    """``dst[c]``: the vertical lerp of input column ``x`` between rows ``y0`` and ``y1``.

    Callers keep ``columns[x]`` per output row with a stamp test in their own loop body: with the
    test inside a helper, LLVM compiled the per-pixel loop about three times slower.
    """
    for c in range(dst.shape[0]):
        dst[c] = _lerp(tensor[y0, x, c], tensor[y1, x, c], t0)


@njit(cache=True, nogil=True, inline="always")
def _first_max(left, right, t1):  # pragma: no cover - compiled
    """First maximum of ``left + (right - left) * t1`` over the channels (max_element NaN rules)."""
    best = _lerp(left[0], right[0], t1)
    index = 0
    for c in range(1, left.shape[0]):
        v = _lerp(left[c], right[c], t1)
        if best < v:
            best = v
            index = c
    return index


@njit(cache=True, nogil=True)
def category_rows(
    tensor,
    klass,
    gap,
    scale,
    xi0,
    xi1,
    xt,
    runs,
    yi0,
    yi1,
    yt,
    threshold,
    shortcut,
    r0,
    r1,
    out,
):  # pragma: no cover - compiled
    """Rows ``r0 <= r < r1`` of the uint8 category mask ``out (height, width)``.

    ``runs`` (n, 3): output columns ``[start, end)`` whose horizontal taps start at input column
    ``cx`` (one row per ``(cx, start, end)``). ``threshold``: for one channel, 0 where the
    interpolated logit is above it (0.5, or ``SIGMOID_ONE_CLASS_THRESHOLD`` for sigmoid: see
    :mod:`gpu_seg.reference`); ignored for several channels (raw argmax; multi-class sigmoid goes
    through :func:`interpolate_rows` instead). ``shortcut``: use the cell classes (``klass``,
    ``gap``, ``scale`` from :func:`texel_classes`, made with the same threshold).

    Returns the pixels computed one by one: the work the shortcut did not save.
    """
    w, channels = tensor.shape[1], tensor.shape[2]
    columns = np.empty((w, channels), np.float32)
    stamps = np.full(w, -1, np.int64)
    cells = np.empty(w, np.int64)
    last_cell_row = -1
    unsure = 0
    for r in range(r0, r1):
        y0 = yi0[r]
        y1 = yi1[r]
        t0 = yt[r]
        row = out[r]
        if shortcut and y0 != last_cell_row:
            cell_row(klass, gap, scale, y0, cells)
            last_cell_row = y0
        for j in range(runs.shape[0]):
            cx = runs[j, 0]
            start = runs[j, 1]
            end = runs[j, 2]
            if shortcut and cells[cx] >= 0:
                k = np.uint8(cells[cx])
                for x in range(start, end):
                    row[x] = k
                continue
            unsure += end - start
            cx1 = min(cx + 1, w - 1)  # every pixel of the run reads columns cx and xi1 in {cx, cx1}
            if stamps[cx] != r:
                _vertical(tensor, y0, y1, t0, cx, columns[cx])
                stamps[cx] = r
            if stamps[cx1] != r:
                _vertical(tensor, y0, y1, t0, cx1, columns[cx1])
                stamps[cx1] = r
            left = columns[cx]
            if channels > 1:
                for x in range(start, end):
                    row[x] = _first_max(left, columns[xi1[x]], xt[x]) & 255
            else:
                for x in range(start, end):
                    row[x] = 0 if _lerp(left[0], columns[xi1[x], 0], xt[x]) > threshold else 255
    return unsure


# ----------------------------------------------------------------------------- dense path
@njit(cache=True, nogil=True)
def interpolate_rows(tensor, xi0, xi1, xt, yi0, yi1, yt, r0, r1, values):  # pragma: no cover - compiled
    """``values[r - r0, x, c]``: the interpolated raw logits of output rows ``r0 <= r < r1``."""
    w, channels = tensor.shape[1], tensor.shape[2]
    columns = np.empty((w, channels), np.float32)
    stamps = np.full(w, -1, np.int64)
    for r in range(r0, r1):
        y0 = yi0[r]
        y1 = yi1[r]
        t0 = yt[r]
        for x in range(values.shape[1]):
            x0 = xi0[x]
            x1 = xi1[x]
            if stamps[x0] != r:
                _vertical(tensor, y0, y1, t0, x0, columns[x0])
                stamps[x0] = r
            if stamps[x1] != r:
                _vertical(tensor, y0, y1, t0, x1, columns[x1])
                stamps[x1] = r
            left = columns[x0]
            right = columns[x1]
            t1 = xt[x]
            for c in range(channels):
                values[r - r0, x, c] = _lerp(left[c], right[c], t1)


@njit(cache=True, nogil=True)
def classify_values(values, r0, out):  # pragma: no cover - compiled
    """``out[r0 + i, x]`` from activated ``values (n, width, C)``: first maximum, or one channel's
    ``value > 0.5`` (0) else 255."""
    channels = values.shape[2]
    for i in range(values.shape[0]):
        row = out[r0 + i]
        for x in range(values.shape[1]):
            if channels == 1:
                row[x] = 0 if values[i, x, 0] > _HALF else 255
                continue
            best = values[i, x, 0]
            index = 0
            for c in range(1, channels):
                v = values[i, x, c]
                if best < v:
                    best = v
                    index = c
            row[x] = index & 255
