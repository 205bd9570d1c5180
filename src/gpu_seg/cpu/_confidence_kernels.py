"""numba kernels of the confidence masks: softmax steps, separable resize, output encodings.

Every kernel works on a band of rows so that a thread pool can split a frame; every one is
compiled with ``nogil=True`` (threads run it in parallel) and without ``fastmath``, so float32
arithmetic keeps the reference's order of operations and is never contracted to FMA.

Layout: the source is the float32 ``(H, W, C)`` tensor (or its activated copy), channel
interleaved; the output is ``(len(channels), height, width)``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

_ONE = np.float32(1.0)
_F255 = np.float32(255.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)


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
def _horizontal(src, r, channels, xi0, xi1, xw0, xw1, pairs, dst):  # pragma: no cover - compiled
    """Source row ``r`` resized horizontally for every selected channel: ``dst (n, width)``.

    Columns ``x < pairs`` read two taps, ``S[i0] * w0 + S[i1] * w1``; the rest (the right border)
    read ``S[i0]`` alone. The channels of a texel are adjacent in ``src``, so they are the inner loop.
    """
    n = channels.shape[0]
    for x in range(pairs):
        a = xi0[x]
        b = xi1[x]
        w0 = xw0[x]
        w1 = xw1[x]
        for i in range(n):
            c = channels[i]
            dst[i, x] = src[r, a, c] * w0 + src[r, b, c] * w1
    for x in range(pairs, dst.shape[1]):
        a = xi0[x]
        for i in range(n):
            dst[i, x] = src[r, a, channels[i]]


@njit(cache=True, nogil=True, inline="always")
def _source_rows(src, y, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, rows, tags):  # pragma: no cover
    """Slots of ``rows (2, n, width)`` holding the resized source rows ``yi0[y]`` and ``yi1[y]``.

    ``tags`` names the source row in each slot; consecutive output rows mostly reuse them (as in
    OpenCV's ``resizeGeneric_``), so each source row is resized about once per band.
    """
    a = yi0[y]
    b = yi1[y]
    if tags[0] == a:
        sa = 0
    elif tags[1] == a:
        sa = 1
    else:
        sa = 1 if tags[0] == b else 0
        _horizontal(src, a, channels, xi0, xi1, xw0, xw1, pairs, rows[sa])
        tags[sa] = a
    if tags[sa] == b:
        sb = sa
    elif tags[1 - sa] == b:
        sb = 1 - sa
    else:
        sb = 1 - sa
        _horizontal(src, b, channels, xi0, xi1, xw0, xw1, pairs, rows[sb])
        tags[sb] = b
    return sa, sb


@njit(cache=True, nogil=True, inline="always")
def _blend(top, bottom, w0, w1, dst):  # pragma: no cover - compiled
    """The vertical pass: ``dst = top * w0 + bottom * w1`` (two roundings, then the sum's)."""
    for x in range(dst.shape[0]):
        dst[x] = top[x] * w0 + bottom[x] * w1


@njit(cache=True, nogil=True, inline="always")
def _copy_channel(src, y, c, dst):  # pragma: no cover - compiled
    """Output size equals the tensor size: no resize, the plane row as is."""
    for x in range(dst.shape[0]):
        dst[x] = src[y, x, c]


_U = np.uint32


@njit(cache=True, nogil=True, inline="always")
def _half_bits(f):  # pragma: no cover - compiled
    """IEEE binary16 bits of the float32 with bits ``f`` (uint32), rounded to nearest even.

    Overflow gives infinity; tiny values give subnormals or signed zero; NaN keeps its sign and its
    top 10 payload bits (at least one set), as numpy's conversion does. Checked against numpy for
    all 2**32 inputs. Written without branches (every case computed, then selected) so that the
    loop vectorises.
    """
    sign = (f >> _U(16)) & _U(0x8000)
    a = f & _U(0x7FFFFFFF)
    mant = a & _U(0x007FFFFF)
    # normal halves: rebias the exponent, keep 10 mantissa bits, round half to even
    normal = (a - _U(0x38000000)) >> _U(13)
    rest = a & _U(0x1FFF)
    normal += _U((rest > _U(0x1000)) | ((rest == _U(0x1000)) & ((normal & _U(1)) == _U(1))))
    # subnormal halves: shift the significand (implicit bit included) right by 14..31 bits
    shift = min(max(_U(126) - min(a >> _U(23), _U(125)), _U(14)), _U(31))
    significand = mant | _U(0x00800000)
    sub = significand >> shift
    rest = significand & ((_U(1) << shift) - _U(1))
    middle = _U(1) << (shift - _U(1))
    sub += _U((rest > middle) | ((rest == middle) & ((sub & _U(1)) == _U(1))))
    payload = mant >> _U(13)
    nan = _U(0x7C00) | payload | _U(payload == _U(0))  # numpy keeps the top payload bits
    special = nan if a > _U(0x7F800000) else _U(0x7C00)
    if a < _U(0x38800000):
        bits = sub
    elif a < _U(0x47800000):
        bits = normal
    else:
        bits = special
    return np.uint16(sign | bits)


def _hardware_half_available() -> bool:
    """Whether LLVM converts float32 to float16 with an instruction here (x86 F16C, or AArch64)
    for the CPU numba compiles for; otherwise it would call a runtime helper the JIT lacks."""
    if config.CPU_NAME or config.CPU_FEATURES:  # a fixed, possibly generic, target: stay portable
        return False
    try:
        from llvmlite import binding

        triple = binding.get_process_triple()
        features = binding.get_host_cpu_features()
    except Exception:  # pragma: no cover - depends on the llvmlite build
        return False
    if triple.startswith(("x86_64", "i386", "i686")):
        return bool(features.get("f16c", False))
    return triple.startswith(("aarch64", "arm64"))


#: float16 stores use the CPU's conversion instruction (checked equal to :func:`_half_bits`).
HARDWARE_HALF = _hardware_half_available()


@intrinsic
def _fptrunc_half(typingctx, value):  # pragma: no cover - compiled
    """float32 -> binary16 bits by LLVM's ``fptrunc`` (round to nearest even, like numpy)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@njit(cache=True, nogil=True, inline="always")
def _hardware_half_bits(value, f):  # pragma: no cover - compiled
    """:func:`_half_bits` by the conversion instruction; NaN payloads as numpy keeps them (the
    instruction would also set the quiet bit)."""
    half = _fptrunc_half(value)
    payload = (f >> _U(13)) & _U(0x3FF)
    nan = ((f >> _U(16)) & _U(0x8000)) | _U(0x7C00) | payload | _U(payload == _U(0))
    return np.uint16(nan) if value != value else half


@njit(cache=True, nogil=True, inline="always")
def _software_half_bits(value, f):  # pragma: no cover - compiled
    return _half_bits(f)


_to_half = _hardware_half_bits if HARDWARE_HALF else _software_half_bits


@njit(cache=True, nogil=True, inline="always")
def _encode_uint8(values, dst):  # pragma: no cover - compiled
    """``floor(v * 255 + 0.5)`` clamped to [0, 255] in float32; NaN -> 0 (branch-free selects)."""
    for x in range(dst.shape[0]):
        scaled = np.floor(values[x] * _F255 + _HALF)
        clamped = scaled if scaled >= _ONE else _ZERO  # NaN fails the test: 0
        clamped = clamped if clamped <= _F255 else _F255
        dst[x] = np.uint8(clamped)


@njit(cache=True, nogil=True)
def resize_float32(
    src, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, yw0, yw1, identity, r0, r1, out
):  # pragma: no cover - compiled
    """Rows ``r0 <= y < r1`` of every selected channel, float32 ``out (len(channels), h, w)``."""
    n = channels.shape[0]
    rows = np.empty((2, n, out.shape[2]), np.float32)
    tags = np.full(2, -1, np.int64)
    for y in range(r0, r1):
        if identity:
            for i in range(n):
                _copy_channel(src, y, channels[i], out[i, y])
            continue
        sa, sb = _source_rows(src, y, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, rows, tags)
        for i in range(n):
            _blend(rows[sa, i], rows[sb, i], yw0[y], yw1[y], out[i, y])


@njit(cache=True, nogil=True)
def resize_float16(
    src, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, yw0, yw1, identity, r0, r1, out
):  # pragma: no cover - compiled
    """As :func:`resize_float32`, stored as float16 bits in uint16 ``out``."""
    n = channels.shape[0]
    rows = np.empty((2, n, out.shape[2]), np.float32)
    tags = np.full(2, -1, np.int64)
    line = np.empty(out.shape[2], np.float32)
    bits = line.view(np.uint32)
    for y in range(r0, r1):
        if not identity:
            sa, sb = _source_rows(src, y, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, rows, tags)
        for i in range(n):
            if identity:
                _copy_channel(src, y, channels[i], line)
            else:
                _blend(rows[sa, i], rows[sb, i], yw0[y], yw1[y], line)
            dst = out[i, y]
            for x in range(dst.shape[0]):
                dst[x] = _to_half(line[x], bits[x])


@njit(cache=True, nogil=True)
def resize_uint8(
    src, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, yw0, yw1, identity, r0, r1, out
):  # pragma: no cover - compiled
    """As :func:`resize_float32`, quantised to uint8 ``out`` after the resize."""
    n = channels.shape[0]
    rows = np.empty((2, n, out.shape[2]), np.float32)
    tags = np.full(2, -1, np.int64)
    line = np.empty(out.shape[2], np.float32)
    for y in range(r0, r1):
        if not identity:
            sa, sb = _source_rows(src, y, channels, xi0, xi1, xw0, xw1, pairs, yi0, yi1, rows, tags)
        for i in range(n):
            if identity:
                _copy_channel(src, y, channels[i], line)
            else:
                _blend(rows[sa, i], rows[sb, i], yw0[y], yw1[y], line)
            _encode_uint8(line, out[i, y])
