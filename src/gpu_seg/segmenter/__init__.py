"""End-to-end segmentation: image -> model -> MediaPipe-exact masks.

* :func:`read_model_info` reads a model's tensors and MediaPipe metadata without running it.
* :class:`ImageToTensor` is the preprocessing (MediaPipe's CPU ``ImageToTensor``).
"""

from __future__ import annotations

from .metadata import ModelInfo, Normalization, TensorInfo, read_model_info
from .preprocess import ImageToTensor

__all__ = ["ImageToTensor", "ModelInfo", "Normalization", "TensorInfo", "read_model_info"]
