"""Validation and normalisation of user arguments, shared by every backend.

Everything here runs before any GL call, so bad input never reaches a driver.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import os
import threading

import numpy as np

from .errors import InputError
from .frame import ConfidenceFormat, Frame, allocate
from .types import Activation

__all__ = [
    "as_hwc_float32",
    "check_disjoint_outputs",
    "check_output_array",
    "check_output_bytes",
    "check_requested_outputs",
    "flag",
    "make_frame",
    "parse_activation",
    "parse_channels",
    "parse_output_size",
    "physical_memory",
    "positive_int",
    "seconds",
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
            try:
                tensor = np.asarray(tensor)
            except (ValueError, TypeError) as exc:  # ragged nesting, mixed types
                raise InputError("tensor", f"the nested sequence is not a regular array: {exc}") from None
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


def flag(value: object, argument: str) -> bool:
    """``bool(value)``; InputError naming ``argument`` where that has no single answer (arrays) or
    where it would mislead (a string: ``"no"`` and ``"False"`` are true)."""
    if isinstance(value, (str, bytes)):
        raise InputError(argument, f"expected True or False, got the string {value!r}")
    try:
        return bool(value)
    except (ValueError, TypeError) as exc:
        raise InputError(argument, f"{type(value).__name__} is not a yes/no flag: {exc}") from None


def seconds(value: object, argument: str, *, zero: bool = False) -> float:
    """``value`` as a finite number of seconds, > 0 (>= 0 with ``zero``) and no longer than the
    longest wait Python's locks and timers take (``threading.TIMEOUT_MAX``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(argument, f"{value!r} is not a number of seconds")
    number = float(value)
    if not (number >= 0 if zero else number > 0) or not math.isfinite(number):
        bound = ">= 0" if zero else "> 0"
        raise InputError(argument, f"{value!r} is not a finite number of seconds {bound}")
    if number > threading.TIMEOUT_MAX:
        longest = threading.TIMEOUT_MAX
        raise InputError(argument, f"{value!r} s is longer than the longest wait ({longest:.3g} s)")
    return number


def parse_output_size(
    output_size: object, tensor_hw: tuple[int, int], max_dim: int = CPU_MAX_OUTPUT_DIM
) -> tuple[int, int]:
    """Return ``(width, height)``; ``None`` means the tensor size.

    ``max_dim`` is the largest dimension the backend accepts (the GL texture limit on GL).
    """
    if output_size is None:
        width, height = tensor_hw[1], tensor_hw[0]
    else:
        if not isinstance(output_size, (tuple, list, np.ndarray)):  # not any iterable: sets, bytes
            raise InputError(
                "output_size", f"{output_size!r} is not a (width, height) pair: a tuple, list or array"
            )
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


def parse_channels(channels: object, count: int, argument: str = "confidence_channels") -> tuple[int, ...]:
    """The confidence channels to return (all when ``channels`` is None), checked against ``count``
    (errors name ``argument``)."""
    if channels is None:
        return tuple(range(count))
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise InputError(argument, f"{channels!r} is not a sequence of channel indices")
    selected = []
    for channel in channels:  # type: ignore[union-attr]
        if isinstance(channel, bool) or not isinstance(channel, numbers.Integral):
            raise InputError(argument, f"{channel!r} is not an integer channel index")
        if channel < 0:
            raise InputError(argument, f"channel {channel} is negative (channels count from 0)")
        if int(channel) >= count:
            raise InputError(argument, f"channel {channel} is out of range for {count} channels")
        selected.append(int(channel))
    if not selected:
        raise InputError(argument, "is empty; pass None for every channel")
    return tuple(selected)


def check_backend(backend: object) -> None:
    """Reject a ``backend`` that is not ``"auto"``, ``"gl"`` or ``"cpu"``."""
    if backend not in ("auto", "gl", "cpu"):
        raise InputError("backend", f"unknown backend {backend!r}; expected 'auto', 'gl' or 'cpu'")


def check_requested_outputs(confidence: bool, category: bool) -> None:
    """Reject a configuration that asks for nothing."""
    if not confidence and not category:
        raise InputError(
            "output_confidence_masks",
            "at least one of output_confidence_masks and output_category_mask must be True",
        )


@functools.cache
def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_output_bytes(
    frame: Frame, confidence_out: np.ndarray | None = None, category_out: np.ndarray | None = None
) -> None:
    """Refuse a frame whose masks to allocate (those without a preallocated array) could never fit in
    this machine's memory (a raw ``MemoryError`` otherwise, or the kernel's OOM killer)."""
    total = (frame.category_bytes if category_out is None else 0) + (
        frame.confidence_bytes if confidence_out is None else 0
    )
    memory = physical_memory()
    if memory is not None and total > memory:
        raise InputError(
            "output_size",
            f"{frame.width}x{frame.height} masks need {total / 2**30:.1f} GiB, more than this machine's "
            f"{memory / 2**30:.1f} GiB of memory",
        )


def check_disjoint_outputs(
    tensor: np.ndarray, confidence_out: np.ndarray | None, category_out: np.ndarray | None
) -> None:
    """Refuse preallocated outputs that share memory with each other or with the (float32) tensor
    read by the frame: the masks would be written over what is still being read."""
    pairs = (
        ("confidence_out", confidence_out, "the tensor", tensor),
        ("category_out", category_out, "the tensor", tensor),
        ("category_out", category_out, "confidence_out", confidence_out),
    )
    for argument, out, name, other in pairs:
        if out is not None and other is not None and np.may_share_memory(out, other):
            raise InputError(argument, f"overlaps the memory of {name}; pass separate arrays")


def check_output_array(
    array: np.ndarray | None, argument: str, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """Return a preallocated output array after checking it, or a fresh one when ``array`` is None."""
    if array is None:
        return allocate(shape, np.dtype(dtype))
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
    frame = Frame(
        tensor=tensor,
        width=width,
        height=height,
        activation=parse_activation(activation),
        confidence_channels=parse_channels(confidence_channels, tensor.shape[2]) if confidence else None,
        category=bool(category),
        confidence_format=ConfidenceFormat.parse(confidence_format),
    )
    return frame
