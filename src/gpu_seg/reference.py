"""MediaPipe's CPU segmentation post-processing, in numpy.

This module is the readable specification of what gpu_seg computes and the CPU fallback of
:class:`~gpu_seg.SegmentationPostprocessor`. It follows
``mediapipe/tasks/cc/vision/image_segmenter/calculators/tensors_to_segmentation_calculator.cc``
(CPU path, MediaPipe 0.10.13 - 1.2.3), operation by operation, in float32:

Convention:
    * Input: float32 ``(H, W, C)`` logits, channel-interleaved, row 0 = top (``(H, W)`` and
      ``(1, H, W, C)`` are accepted). Output size is ``(width, height)``. Nothing is flipped or
      rotated.
    * Confidence masks ``(C, height, width)``: the activation at tensor resolution (sigmoid
      ``1 / (1 + exp(-x))``; softmax: subtract the first maximum, ``exp``, sum the channels in
      order 0..C-1, divide; none: copy), then OpenCV ``INTER_LINEAR`` (half-pixel centres,
      clamped borders) per channel, see :mod:`gpu_seg.sampling`. No resize when the output size
      equals the tensor size.
    * Category mask ``(height, width)`` uint8: bilinear interpolation of the **raw logits** with
      the **align-corners** mapping, vertical lerp first (``a + (b - a) * t``), sigmoid when the
      activation is sigmoid (softmax is skipped: it does not change the argmax), then the index of
      the first maximum (ties go to the lowest index; indices wrap modulo 256). One channel:
      0 where the value is > 0.5 (foreground), else 255; with sigmoid, 0 where the sigmoid is
      > 0.5 as MediaPipe's float32 ``1 / (1 + expf(-v))`` computes it, i.e. where
      ``v > SIGMOID_ONE_CLASS_THRESHOLD`` (see there).
    * NaN/inf follow IEEE float32 and C++ ``std::max_element``: softmax turns a pixel with any NaN
      or +inf into NaN in every channel; a NaN channel never wins the argmax unless it is channel
      0; a NaN one-class value gives 255. Resizing spreads a NaN to every output pixel whose taps
      read it, even with a zero weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .frame import ConfidenceFormat, Frame
from .inputs import (
    as_hwc_float32,
    check_disjoint_outputs,
    check_output_array,
    check_output_bytes,
    make_frame,
    parse_activation,
)
from .sampling import SINGLE_TAP, align_corners_taps, identity_taps, resize_taps
from .types import Activation, Result

__all__ = [
    "activate",
    "category_mask",
    "compute",
    "confidence_masks",
    "encode_confidence",
    "reference_postprocess",
    "resize_plane",
]

#: One-class sigmoid category mask: MediaPipe's ``1.0f / (1.0f + std::exp(-v)) > 0.5f`` holds exactly
#: when ``v > 3 * 2**-25`` (about 8.94e-8), given a correctly rounded ``expf`` (glibc's, which the
#: mediapipe wheel calls; ``tests/test_one_class_threshold.py`` reads it from MediaPipe). Why: for
#: ``0 < v < 2**-20``, ``expf(-v)`` is ``1 - k * 2**-24``; ``1 + (1 - 2**-24)`` is a tie that rounds to
#: 2.0 (sigmoid 0.5, background) while ``k >= 2`` gives ``2 - 2**-23`` and a sigmoid of
#: ``0.5 + 2**-24``; ``k >= 2`` once ``exp(-v)`` falls below the midpoint ``1 - 3 * 2**-25``, which
#: ``1 - v + v*v/2`` does exactly for ``v > 3 * 2**-25`` (float32 spacing there exceeds ``v*v/2``);
#: the sigmoid is monotone, so larger ``v`` stay foreground and smaller ones background; NaN is
#: background. Computing the sigmoid with another ``exp`` (numpy's float32 one, a GPU's) moves
#: this threshold within about (6e-8, 1.3e-7), so every backend compares the logit instead.
SIGMOID_ONE_CLASS_THRESHOLD = np.float32(3 * 2.0**-25)

#: Bytes of float32 scratch per block of rows in :func:`category_mask`.
_CATEGORY_BLOCK_BYTES = 8 << 20


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)


def _first_max(values: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Value and index of the first maximum along ``axis``, with ``std::max_element`` semantics.

    The scan keeps the current best unless ``best < v`` holds, so a NaN is never taken over,
    and a NaN at index 0 keeps index 0.
    """
    values = np.moveaxis(values, axis, 0)
    best = values[0].copy()
    index = np.zeros(best.shape, np.int64)
    for c in range(1, values.shape[0]):
        take = best < values[c]
        np.copyto(best, values[c], where=take)
        index[take] = c
    return best, index


def activate(tensor: np.ndarray, activation: Activation | str) -> np.ndarray:
    """Apply ``activation`` at tensor resolution; returns float32 planes ``(C, H, W)``."""
    return _activated_planes(as_hwc_float32(tensor), parse_activation(activation))


def _activated_planes(tensor: np.ndarray, activation: Activation) -> np.ndarray:
    planes = np.ascontiguousarray(np.moveaxis(tensor, -1, 0))
    if activation is Activation.SIGMOID:
        return _sigmoid(planes)
    if activation is Activation.SOFTMAX:
        peak, _ = _first_max(planes, axis=0)
        with np.errstate(invalid="ignore", over="ignore"):
            exps = np.exp(planes - peak[None]).astype(np.float32, copy=False)
            total = exps[0].copy()
            for c in range(1, exps.shape[0]):
                total += exps[c]  # sequential float32 sum, channel 0 first
            exps /= total[None]
        return exps
    return planes


def resize_plane(plane: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    """OpenCV ``INTER_LINEAR`` resize of one float32 ``(H, W)`` plane (generic, non-IPP path)."""
    in_h, in_w = plane.shape
    if out is None:
        out = np.empty((height, width), np.float32)
    if (in_w, in_h) == (width, height):
        tx, ty = identity_taps(width), identity_taps(height)
    else:
        tx, ty = resize_taps(in_w, width, "x"), resize_taps(in_h, height, "y")
    with np.errstate(invalid="ignore", over="ignore"):
        single = tx.i1 == SINGLE_TAP
        rows = plane[:, tx.i0] * tx.w0 + plane[:, np.where(single, tx.i0, tx.i1)] * tx.w1
        rows[:, single] = plane[:, tx.i0[single]]
        if np.all(ty.i1 == SINGLE_TAP):
            out[...] = rows[ty.i0]
        else:
            np.multiply(rows[ty.i0], ty.w0[:, None], out=out)
            out += rows[ty.i1] * ty.w1[:, None]
    return out


def encode_confidence(
    values: np.ndarray, fmt: ConfidenceFormat | str | type | np.dtype, out: np.ndarray
) -> np.ndarray:
    """Store float32 confidences in format ``fmt``: float32 as is; float16 rounded to nearest even;
    uint8 as ``floor(v * 255 + 0.5)`` clamped to [0, 255] (round half up), NaN -> 0."""
    fmt = ConfidenceFormat.parse(fmt, "fmt")
    if fmt is ConfidenceFormat.FLOAT32:
        out[...] = values
    elif fmt is ConfidenceFormat.FLOAT16:
        with np.errstate(over="ignore"):
            out[...] = values.astype(np.float16)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.floor(values * np.float32(255.0) + np.float32(0.5))
            out[...] = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
    return out


def compute(frame: Frame, confidence_out: np.ndarray | None, category_out: np.ndarray | None) -> None:
    """Compute a validated frame's requested masks into the given arrays (the CPU backend entry)."""
    if frame.confidence_channels is not None:
        assert confidence_out is not None
        _confidence_into(frame, confidence_out)
    if frame.category:
        assert category_out is not None
        _category_into(frame, category_out)


def _confidence_into(frame: Frame, out: np.ndarray) -> None:
    planes = _activated_planes(frame.tensor, frame.activation)
    fmt = frame.confidence_format
    scratch = None if fmt is ConfidenceFormat.FLOAT32 else np.empty((frame.height, frame.width), np.float32)
    for index, channel in enumerate(frame.confidence_channels or ()):
        if scratch is None:
            resize_plane(planes[channel], frame.width, frame.height, out=out[index])
        else:
            encode_confidence(
                resize_plane(planes[channel], frame.width, frame.height, out=scratch), fmt, out[index]
            )


def _category_into(frame: Frame, out: np.ndarray) -> None:
    tensor, width, height = frame.tensor, frame.width, frame.height
    in_h, in_w, channels = tensor.shape
    tx = align_corners_taps(in_w, width)
    ty = align_corners_taps(in_h, height)
    block = max(1, _CATEGORY_BLOCK_BYTES // (4 * width * channels))
    t1 = tx.t[None, :, None]
    for r0 in range(0, height, block):
        rows = slice(r0, min(height, r0 + block))
        y0, y1, t0 = ty.i0[rows, None], ty.i1[rows, None], ty.t[rows, None, None]
        with np.errstate(invalid="ignore", over="ignore"):
            a = tensor[y0, tx.i0[None, :]]
            b = tensor[y1, tx.i0[None, :]]
            left = a + (b - a) * t0
            a = tensor[y0, tx.i1[None, :]]
            b = tensor[y1, tx.i1[None, :]]
            right = a + (b - a) * t0
            value = left + (right - left) * t1
        if channels == 1:
            threshold = SIGMOID_ONE_CLASS_THRESHOLD if frame.activation is Activation.SIGMOID else 0.5
            out[rows] = np.where(value[..., 0] > np.float32(threshold), 0, 255)
            continue
        if frame.activation is Activation.SIGMOID:
            value = _sigmoid(value)
        if np.isnan(value).any():
            out[rows] = _first_max(value, axis=-1)[1].astype(np.uint8)
        else:
            out[rows] = np.argmax(value, axis=-1).astype(np.uint8)  # first maximum, like max_element


def confidence_masks(
    tensor: np.ndarray,
    activation: Activation | str,
    output_size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
    dtype: ConfidenceFormat | str | type | np.dtype = "float32",
    channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Confidence masks ``(len(channels), height, width)`` as ``dtype`` (default: all, float32).

    ``channels`` selects and orders the masks; the activation still sees every channel.
    ``dtype`` is a :class:`~gpu_seg.frame.ConfidenceFormat`, its name or a numpy dtype.
    """
    frame = make_frame(
        tensor, activation, output_size, confidence=True, category=False,
        confidence_format=ConfidenceFormat.parse(dtype, "dtype"), confidence_channels=channels,
    )  # fmt: skip
    check_output_bytes(frame, out, None)
    out = check_output_array(out, "out", frame.confidence_shape, frame.confidence_format.dtype)
    check_disjoint_outputs(frame.tensor, out, None)
    _confidence_into(frame, out)
    return out


def category_mask(
    tensor: np.ndarray,
    activation: Activation | str,
    output_size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 category mask ``(height, width)``."""
    frame = make_frame(tensor, activation, output_size, confidence=False, category=True)
    check_output_bytes(frame, None, out)
    out = check_output_array(out, "out", frame.category_shape, np.dtype(np.uint8))
    check_disjoint_outputs(frame.tensor, None, out)
    _category_into(frame, out)
    return out


def reference_postprocess(
    tensor: np.ndarray,
    activation: Activation | str = Activation.NONE,
    output_size: tuple[int, int] | None = None,
    output_confidence_masks: bool = True,
    output_category_mask: bool = True,
    confidence_dtype: ConfidenceFormat | str | type | np.dtype = "float32",
    confidence_channels: Sequence[int] | None = None,
) -> Result:
    """MediaPipe's CPU post-processing of ``tensor`` in numpy; see the module docstring.

    Args:
        tensor: model output, float32 ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``.
        activation: ``"none"``, ``"sigmoid"``, ``"softmax"`` or an :class:`Activation`.
        output_size: ``(width, height)``; defaults to the tensor size.
        output_confidence_masks: compute the ``(C, height, width)`` masks.
        output_category_mask: compute the uint8 ``(height, width)`` mask.
        confidence_dtype: a :class:`~gpu_seg.frame.ConfidenceFormat`, its name or a numpy dtype:
            float32, float16 (round to nearest even) or uint8 (``floor(v * 255 + 0.5)`` clamped,
            NaN -> 0; quantised after the resize).
        confidence_channels: indices of the confidence masks to return, in that order.

    Returns:
        A :class:`Result` with ``backend == "cpu"``.
    """
    frame = make_frame(
        tensor, activation, output_size,
        confidence=bool(output_confidence_masks), category=bool(output_category_mask),
        confidence_format=confidence_dtype, confidence_channels=confidence_channels,
    )  # fmt: skip
    check_output_bytes(frame)
    confidence, category = frame.allocate_confidence(), frame.allocate_category()
    compute(frame, confidence, category)
    return Result(confidence_masks=confidence, category_mask=category, backend="cpu")
