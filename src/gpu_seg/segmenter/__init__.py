"""End-to-end segmentation: image -> model -> MediaPipe-exact masks.

:func:`read_model_info` reads a segmentation model's tensors and MediaPipe metadata without running it.
"""

from __future__ import annotations

from .metadata import ModelInfo, Normalization, TensorInfo, read_model_info

__all__ = ["ModelInfo", "Normalization", "TensorInfo", "read_model_info"]
