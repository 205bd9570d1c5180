"""A validated frame: what every backend receives, and the confidence storage formats.

The public boundary (:class:`~gpu_seg.SegmentationPostprocessor`, :func:`~gpu_seg.reference_postprocess`)
validates the user's arguments once (:mod:`gpu_seg.inputs`) and passes a :class:`Frame` down; the
backends (GL pipeline, CPU paths) never validate again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .types import Activation

if TYPE_CHECKING:
    from .recycled import RecycledArrays

__all__ = ["ConfidenceFormat", "Frame"]


class ConfidenceFormat(enum.StrEnum):
    """How confidence masks are stored.

    * ``FLOAT32``: the float32 values as computed.
    * ``FLOAT16``: rounded to the nearest float16 (ties to even).
    * ``UINT8``: ``floor(v * 255 + 0.5)`` clamped to [0, 255], NaN -> 0 (quantised after the
      resize; MediaPipe's own uint8 option quantises before it).
    """

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of masks in this format."""
        return np.dtype(self.value)

    @classmethod
    def parse(cls, value: object, argument: str = "confidence_dtype") -> ConfidenceFormat:
        """The format named by ``value``: a member, its name (``"float16"``) or a numpy dtype/type.

        Raises:
            InputError: ``value`` names no format (the error names ``argument``).
        """
        if isinstance(value, cls):
            return value
        if value is not None:
            try:
                return cls(np.dtype(value).name)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                pass
        choices = ", ".join(repr(f.value) for f in cls)
        raise InputError(argument, f"{value!r} is not one of {choices}")


@dataclass(frozen=True)
class Frame:
    """One validated frame of work.

    Attributes:
        tensor: float32 ``(H, W, C)`` logits, C-contiguous, channel-interleaved (HWC), row 0 = top.
        width: output width in pixels.
        height: output height in pixels.
        activation: the activation applied to the confidence masks.
        confidence_channels: the confidence masks to compute, in order (indices into C); ``None``
            when no confidence masks are requested.
        category: whether the category mask is requested.
        confidence_format: how confidence masks are stored.
    """

    tensor: np.ndarray
    width: int
    height: int
    activation: Activation
    confidence_channels: tuple[int, ...] | None
    category: bool
    confidence_format: ConfidenceFormat = ConfidenceFormat.FLOAT32

    @property
    def channels(self) -> int:
        """C, the number of channels of the tensor."""
        return int(self.tensor.shape[2])

    @property
    def all_channels(self) -> bool:
        """Whether the confidence masks are every channel, in order."""
        return self.confidence_channels == tuple(range(self.channels))

    @property
    def confidence_shape(self) -> tuple[int, int, int] | None:
        """``(masks, height, width)`` of the confidence masks, or None when not requested."""
        if self.confidence_channels is None:
            return None
        return (len(self.confidence_channels), self.height, self.width)

    @property
    def category_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the category mask, or None when not requested."""
        return (self.height, self.width) if self.category else None

    @property
    def softmax_statistics(self) -> bool:
        """Whether the frame needs the softmax statistics (softmax confidence masks): on GL a
        texture at tensor resolution."""
        return self.activation is Activation.SOFTMAX and self.confidence_channels is not None

    @property
    def confidence_bytes(self) -> int:
        """Bytes of the confidence masks (0 when not requested)."""
        shape = self.confidence_shape
        return 0 if shape is None else shape[0] * shape[1] * shape[2] * self.confidence_format.dtype.itemsize

    @property
    def category_bytes(self) -> int:
        """Bytes of the category mask (0 when not requested)."""
        return self.width * self.height if self.category else 0

    def allocate_confidence(self, arrays: RecycledArrays | None = None) -> np.ndarray | None:
        """An array for the confidence masks (None when not requested): from ``arrays`` (memory
        that nothing references any more, see :mod:`gpu_seg.recycled`) or fresh."""
        shape = self.confidence_shape
        if shape is None:
            return None
        dtype = self.confidence_format.dtype
        return allocate(shape, dtype, arrays)

    def allocate_category(self, arrays: RecycledArrays | None = None) -> np.ndarray | None:
        """An array for the category mask (None when not requested), as :meth:`allocate_confidence`."""
        shape = self.category_shape
        if shape is None:
            return None
        return allocate(shape, np.dtype(np.uint8), arrays)

    def allocate(self, arrays: RecycledArrays | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(allocate_confidence(arrays), allocate_category(arrays))``."""
        return self.allocate_confidence(arrays), self.allocate_category(arrays)


def allocate(shape: tuple[int, ...], dtype: np.dtype, arrays: RecycledArrays | None = None) -> np.ndarray:
    """An array for masks: from ``arrays`` (see :mod:`gpu_seg.recycled`) or fresh; a MemoryError is
    reported as the output size's fault (an InputError), not raised raw."""
    try:
        return np.empty(shape, dtype) if arrays is None else arrays.take(shape, dtype)
    except MemoryError:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raise InputError(
            "output_size", f"{np.dtype(dtype)} masks {shape} need {size / 2**30:.1f} GiB: out of memory"
        ) from None
