"""End-to-end segmentation: image -> model (LiteRT) -> MediaPipe-exact masks (gpu_seg post-processing).

* :class:`ImageSegmenter` runs a segmentation ``.tflite`` with MediaPipe metadata (for example
  :func:`gpu_seg.models.selfie_segmenter`) and returns the masks MediaPipe's ``ImageSegmenter``
  (CPU) returns for the same model.
* :func:`read_model_info` reads a model's tensors and metadata without running it.
* :class:`ImageToTensor` is the preprocessing alone (MediaPipe's CPU ``ImageToTensor``).

Needs ``ai-edge-litert`` to run models: ``pip install "gpu_seg[segmenter]"``.
"""

from __future__ import annotations

from .inference import LiteRTUnavailableError
from .metadata import ModelInfo, Normalization, TensorInfo, read_model_info
from .preprocess import ImageToTensor
from .segmenter import ImageSegmenter, RunningMode, SegmentationResult

__all__ = [
    "ImageSegmenter",
    "ImageToTensor",
    "LiteRTUnavailableError",
    "ModelInfo",
    "Normalization",
    "RunningMode",
    "SegmentationResult",
    "TensorInfo",
    "read_model_info",
]
