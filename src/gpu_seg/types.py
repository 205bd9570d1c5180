"""Options and result types shared by every backend."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Activation", "Backend", "Result"]

Backend = Literal["gl", "cpu", "mediapipe"]


class Activation(enum.StrEnum):
    """The activation MediaPipe applies to the model output (``SegmenterOptions.activation``)."""

    NONE = "none"
    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"


@dataclass(frozen=True)
class Result:
    """Masks for one frame.

    Attributes:
        confidence_masks: ``(C, height, width)``, C-contiguous, one mask per model channel (or per
            selected channel); float32 unless another ``confidence_dtype`` was asked for; ``None``
            when not requested. With ``Activation.NONE`` the values are raw logits.
        category_mask: uint8 ``(height, width)``; ``None`` when not requested. Multi-class: index of
            the first maximum (wraps modulo 256 above 256 classes). One class: 0 = foreground,
            255 = background.
        backend: ``"gl"`` or ``"cpu"``: where this frame was computed (``"mediapipe"`` for
            :func:`gpu_seg.oracle.mediapipe_postprocess`).
    """

    confidence_masks: np.ndarray | None
    category_mask: np.ndarray | None
    backend: Backend
