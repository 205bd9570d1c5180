"""numba kernels of the confidence masks: softmax steps, separable resize, output encodings.

Every kernel works on a band of rows so that a thread pool can split a frame; every one is
compiled with ``nogil=True`` (threads run it in parallel) and without ``fastmath``, so float32
arithmetic keeps the reference's order of operations and is never contracted to FMA.

Layout: the source is the float32 ``(H, W, C)`` tensor (or its activated copy), channel
interleaved; the output is ``(len(channels), height, width)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.float32(1.0)
_F255 = np.float32(255.0)
_HALF = np.float32(0.5)


# ----------------------------------------------------------------------------- softmax
@njit(cache=True, nogil=True)
def softmax_shift(tensor, y0, y1, out):  # pragma: no cover - compiled
    """``out[y, x, c] = tensor[y, x, c] - m(y, x)`` for rows ``y0 <= y < y1``.

    ``m`` is the first maximum over the channels with ``std::max_element`` semantics: the running
    best is replaced only when ``best < v``, so a NaN in channel 0 stays and a later NaN is skipped.
    """
    channels = tensor.shape[2]
    for y in range(y0, y1):
        for x in range(tensor.shape[1]):
            best = tensor[y, x, 0]
            for c in range(1, channels):
                v = tensor[y, x, c]
                if best < v:
                    best = v
            for c in range(channels):
                out[y, x, c] = tensor[y, x, c] - best


@njit(cache=True, nogil=True)
def softmax_normalise(exps, y0, y1):  # pragma: no cover - compiled
    """In place: divide each pixel's exponentials by their float32 sum, taken channel 0 first."""
    channels = exps.shape[2]
    for y in range(y0, y1):
        for x in range(exps.shape[1]):
            total = exps[y, x, 0]
            for c in range(1, channels):
                total += exps[y, x, c]
            for c in range(channels):
                exps[y, x, c] = exps[y, x, c] / total


# ----------------------------------------------------------------------------- resize
@njit(cache=True, nogil=True, inline="always")
def _horizontal(src, r, ch, xi0, xi1, xw0, xw1, dst):  # pragma: no cover - compiled
    """One source row resized horizontally: ``S[i0] * w0 + S[i1] * w1``, or ``S[i0]`` (single tap)."""
    for x in range(dst.shape[0]):
        j = xi1[x]
        a = src[r, xi0[x], ch]
        if j < 0:
            dst[x] = a
        else:
            dst[x] = a * xw0[x] + src[r, j, ch] * xw1[x]


@njit(cache=True, nogil=True, inline="always")
def _slot(tags, row, keep):  # pragma: no cover - compiled
    """The cache slot holding source ``row`` (>= 0), or the slot to fill (-1 - slot), never ``keep``."""
    if tags[0] == row:
        return 0
    if tags[1] == row:
        return 1
    return -2 if keep == 0 else -1


@njit(cache=True, nogil=True, inline="always")
def _output_row(
    src, ch, y, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, rows, tags, dst
):  # pragma: no cover
    """Output row ``y`` of channel ``ch`` as float32 into ``dst``.

    ``rows`` (2, width) caches two horizontally resized source rows, named by ``tags``; consecutive
    output rows share them, as in OpenCV's ``resizeGeneric_``.
    """
    if identity:
        for x in range(dst.shape[0]):
            dst[x] = src[y, x, ch]
        return
    a = yi0[y]
    b = yi1[y]
    sa = _slot(tags, a, -1)
    if sa < 0:
        sa = 0 if tags[0] != b else 1
        _horizontal(src, a, ch, xi0, xi1, xw0, xw1, rows[sa])
        tags[sa] = a
    sb = _slot(tags, b, sa)
    if sb < 0:
        sb = 1 - sa
        _horizontal(src, b, ch, xi0, xi1, xw0, xw1, rows[sb])
        tags[sb] = b
    w0 = yw0[y]
    w1 = yw1[y]
    top = rows[sa]
    bottom = rows[sb]
    for x in range(dst.shape[0]):
        dst[x] = top[x] * w0 + bottom[x] * w1


@njit(cache=True, nogil=True, inline="always")
def _half_bits(f):  # pragma: no cover - compiled
    """IEEE binary16 bits of the float32 with bits ``f`` (uint32), rounded to nearest even.

    NaN keeps its sign and top payload bits and is made quiet, as the x86 F16C conversion numpy
    uses does; overflow gives infinity; tiny values give subnormals or signed zero.
    """
    sign = (f >> np.uint32(16)) & np.uint32(0x8000)
    exp = f & np.uint32(0x7F800000)
    mant = f & np.uint32(0x007FFFFF)
    if exp == np.uint32(0x7F800000):
        if mant != 0:
            return np.uint16(sign | np.uint32(0x7E00) | (mant >> np.uint32(13)))
        return np.uint16(sign | np.uint32(0x7C00))
    if exp >= np.uint32(0x47800000):  # >= 65536 before rounding: infinity
        return np.uint16(sign | np.uint32(0x7C00))
    if exp <= np.uint32(0x38000000):  # below the smallest normal half: subnormal or zero
        if exp < np.uint32(0x33000000):
            return np.uint16(sign)
        e = exp >> np.uint32(23)
        sig = np.uint32(0x00800000) | mant
        shift = np.uint32(126) - e  # 14 .. 24 bits go away
        half = sig >> shift
        rest = sig & ((np.uint32(1) << shift) - np.uint32(1))
        midpoint = np.uint32(1) << (shift - np.uint32(1))
        if rest > midpoint or (rest == midpoint and (half & np.uint32(1)) != 0):
            half += np.uint32(1)
        return np.uint16(sign | half)
    value = ((exp - np.uint32(0x38000000)) >> np.uint32(13)) | (mant >> np.uint32(13))
    rest = mant & np.uint32(0x1FFF)
    if rest > np.uint32(0x1000) or (rest == np.uint32(0x1000) and (value & np.uint32(1)) != 0):
        value += np.uint32(1)  # a carry into the exponent is right, up to infinity
    return np.uint16(sign | value)


@njit(cache=True, nogil=True, inline="always")
def _encode_uint8(values, dst):  # pragma: no cover - compiled
    """``floor(v * 255 + 0.5)`` clamped to [0, 255] in float32; NaN -> 0."""
    for x in range(dst.shape[0]):
        scaled = np.floor(values[x] * _F255 + _HALF)
        if scaled >= _F255:
            dst[x] = 255
        elif scaled >= _ONE:
            dst[x] = np.uint8(scaled)
        else:
            dst[x] = 0


@njit(cache=True, nogil=True)
def resize_float32(
    src, channels, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, r0, r1, out
):  # pragma: no cover - compiled
    """Rows ``r0 <= y < r1`` of every selected channel, float32 ``out (len(channels), h, w)``."""
    rows = np.empty((2, out.shape[2]), np.float32)
    tags = np.empty(2, np.int64)
    for i in range(channels.shape[0]):
        tags[0] = -1
        tags[1] = -1
        for y in range(r0, r1):
            _output_row(
                src, channels[i], y, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, rows, tags, out[i, y]
            )


@njit(cache=True, nogil=True)
def resize_float16(
    src, channels, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, r0, r1, out
):  # pragma: no cover - compiled
    """As :func:`resize_float32`, stored as float16 bits in uint16 ``out``."""
    rows = np.empty((2, out.shape[2]), np.float32)
    tags = np.empty(2, np.int64)
    line = np.empty(out.shape[2], np.float32)
    bits = line.view(np.uint32)
    for i in range(channels.shape[0]):
        tags[0] = -1
        tags[1] = -1
        for y in range(r0, r1):
            _output_row(
                src, channels[i], y, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, rows, tags, line
            )
            dst = out[i, y]
            for x in range(dst.shape[0]):
                dst[x] = _half_bits(bits[x])


@njit(cache=True, nogil=True)
def resize_uint8(
    src, channels, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, r0, r1, out
):  # pragma: no cover - compiled
    """As :func:`resize_float32`, quantised to uint8 ``out`` after the resize."""
    rows = np.empty((2, out.shape[2]), np.float32)
    tags = np.empty(2, np.int64)
    line = np.empty(out.shape[2], np.float32)
    for i in range(channels.shape[0]):
        tags[0] = -1
        tags[1] = -1
        for y in range(r0, r1):
            _output_row(
                src, channels[i], y, xi0, xi1, xw0, xw1, yi0, yi1, yw0, yw1, identity, rows, tags, line
            )
            _encode_uint8(line, out[i, y])
