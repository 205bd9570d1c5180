"""Validation and normalisation of user arguments, shared by every backend.

Everything here runs before any GL call, so bad input never reaches a driver.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .errors import InputError
from .frame import ConfidenceFormat, Frame
from .types import Activation

__all__ = [
    "as_hwc_float32",
    "check_output_array",
    "check_requested_outputs",
    "make_frame",
    "parse_activation",
    "parse_channels",
    "parse_output_size",
    "positive_int",
]

#: Upper bound on an output dimension for the CPU path (the GL path uses the driver's limit).
CPU_MAX_OUTPUT_DIM = 65536


def parse_activation(activation: Activation | str) -> Activation:
    """Return the :class:`Activation` named by ``activation`` (a member or its string value)."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        try:
            return Activation(activation.lower())
        except ValueError:
            pass
    choices = ", ".join(repr(a.value) for a in Activation)
    raise InputError("activation", f"unknown activation {activation!r}; expected one of {choices}")


def as_hwc_float32(tensor: object) -> np.ndarray:
    """Return ``tensor`` as a C-contiguous float32 ``(H, W, C)`` array.

    Accepts ``(H, W)`` (one channel), ``(H, W, C)`` and ``(1, H, W, C)``, channel-interleaved
    with row 0 at the top. float16 and float64 are converted; other dtypes are rejected.
    Returns the input itself (no copy) when it is already float32, C-contiguous and 3-D.
    """
    if not isinstance(tensor, np.ndarray):
        if isinstance(tensor, (list, tuple)):
            tensor = np.asarray(tensor)
        else:
            raise InputError("tensor", f"expected a numpy array, got {type(tensor).__name__}")
    if tensor.dtype.kind != "f" or tensor.dtype.itemsize not in (2, 4, 8):
        raise InputError(
            "tensor",
            f"dtype {tensor.dtype} is not supported; pass float32 (float16 and float64 are "
            "converted). Dequantise integer model outputs first.",
        )
    if tensor.ndim == 2:
        tensor = tensor[:, :, None]
    elif tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise InputError(
                "tensor", f"batch size {tensor.shape[0]} in shape {tensor.shape}; only batch 1 is supported"
            )
        tensor = tensor[0]
    elif tensor.ndim != 3:
        raise InputError(
            "tensor",
            f"shape {tensor.shape} has rank {tensor.ndim}; expected (H, W), (H, W, C) or (1, H, W, C)",
        )
    h, w, c = tensor.shape
    if h == 0 or w == 0:
        raise InputError("tensor", f"shape {tensor.shape} has an empty spatial dimension")
    if c == 0:
        raise InputError("tensor", f"shape {tensor.shape} has no channels (C = 0)")
    return np.ascontiguousarray(tensor, dtype=np.float32)


def positive_int(value: object, argument: str) -> int:
    """``value`` as a positive ``int``; InputError naming ``argument`` otherwise (floats and bools too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            raise InputError(argument, f"{value!r} is a float; pass an integer")
        raise InputError(argument, f"{value!r} is not an integer")
    value = operator.index(value)
    if value <= 0:
        raise InputError(argument, f"{value} is not positive")
    return value


def parse_output_size(
    output_size: object, tensor_hw: tuple[int, int], max_dim: int = CPU_MAX_OUTPUT_DIM
) -> tuple[int, int]:
    """Return ``(width, height)``; ``None`` means the tensor size.

    ``max_dim`` is the largest dimension the backend accepts (the GL texture limit on GL).
    """
    if output_size is None:
        width, height = tensor_hw[1], tensor_hw[0]
    else:
        try:
            width_obj, height_obj = output_size  # type: ignore[misc]
        except (TypeError, ValueError):
            raise InputError("output_size", f"{output_size!r} is not a (width, height) pair") from None
        width = positive_int(width_obj, "output_size")
        height = positive_int(height_obj, "output_size")
    for name, value in (("width", width), ("height", height)):
        if value > max_dim:
            raise InputError("output_size", f"{name} {value} exceeds the limit of {max_dim} for this backend")
    return width, height


def parse_channels(channels: object, count: int) -> tuple[int, ...]:
    """The confidence channels to return (all when ``channels`` is None), checked against ``count``."""
    if channels is None:
        return tuple(range(count))
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise InputError("confidence_channels", f"{channels!r} is not a sequence of channel indices")
    selected = []
    for channel in channels:  # type: ignore[union-attr]
        if isinstance(channel, bool) or not isinstance(channel, numbers.Integral):
            raise InputError("confidence_channels", f"{channel!r} is not an integer channel index")
        if not 0 <= int(channel) < count:
            raise InputError("confidence_channels", f"channel {channel} is out of range for {count} channels")
        selected.append(int(channel))
    if not selected:
        raise InputError("confidence_channels", "is empty; pass None for every channel")
    return tuple(selected)


def check_requested_outputs(confidence: bool, category: bool) -> None:
    """Reject a configuration that asks for nothing."""
    if not confidence and not category:
        raise InputError(
            "output_confidence_masks",
            "at least one of output_confidence_masks and output_category_mask must be True",
        )


def check_output_array(
    array: np.ndarray | None, argument: str, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """Return a preallocated output array after checking it, or a fresh one when ``array`` is None."""
    if array is None:
        return np.empty(shape, dtype)
    if not isinstance(array, np.ndarray):
        raise InputError(argument, f"expected a numpy array, got {type(array).__name__}")
    if array.shape != shape or array.dtype != dtype:
        raise InputError(argument, f"expected {np.dtype(dtype)} {shape}, got {array.dtype} {array.shape}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise InputError(argument, "must be C-contiguous and writeable")
    return array


def make_frame(
    tensor: object,
    activation: Activation | str,
    output_size: object,
    *,
    confidence: bool,
    category: bool,
    confidence_format: ConfidenceFormat | str = ConfidenceFormat.FLOAT32,
    confidence_channels: object = None,
    max_dim: int = CPU_MAX_OUTPUT_DIM,
) -> Frame:
    """Validate one frame's arguments, once, and return the :class:`~gpu_seg.frame.Frame` backends get.

    Raises:
        InputError: naming the offending argument.
    """
    check_requested_outputs(confidence, category)
    tensor = as_hwc_float32(tensor)
    width, height = parse_output_size(output_size, tensor.shape[:2], max_dim)
    return Frame(
        tensor=tensor,
        width=width,
        height=height,
        activation=parse_activation(activation),
        confidence_channels=parse_channels(confidence_channels, tensor.shape[2]) if confidence else None,
        category=bool(category),
        confidence_format=ConfidenceFormat.parse(confidence_format),
    )
