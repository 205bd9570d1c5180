"""End-to-end segmentation: image -> model -> MediaPipe-exact masks.

* :func:`read_model_info` reads a model's tensors and MediaPipe metadata without running it.
* :class:`ImageToTensor` is the preprocessing (MediaPipe's CPU ``ImageToTensor``).
* :class:`LiteRTModel` runs a model on LiteRT (``pip install "gpu_seg[segmenter]"``).
"""

from __future__ import annotations

from .inference import LiteRTModel, LiteRTUnavailableError
from .metadata import ModelInfo, Normalization, TensorInfo, read_model_info
from .preprocess import ImageToTensor

__all__ = [
    "ImageToTensor",
    "LiteRTModel",
    "LiteRTUnavailableError",
    "ModelInfo",
    "Normalization",
    "TensorInfo",
    "read_model_info",
]
