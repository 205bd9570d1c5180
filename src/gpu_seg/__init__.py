"""gpu_seg: MediaPipe's image-segmentation post-processing on the GPU (GLSL, moderngl).

``SegmentationPostprocessor`` turns a segmentation model's output tensor into the masks that
MediaPipe's CPU path produces (confidence masks and a category mask), computed with GLSL
programs on a headless EGL context, recovering from context loss and falling back to the CPU.
``reference_postprocess`` is the same computation in numpy, and ``gpu_seg.oracle`` runs real
MediaPipe for comparison. ``ImageSegmenter`` is the whole path: image -> model (LiteRT) -> masks;
``gpu_seg.models.selfie_segmenter()`` gives a real model.
"""

from __future__ import annotations

import logging

from .cuda import CudaArray, CudaMasks
from .errors import (
    CapacityError,
    ClosedError,
    ContextLostError,
    ExpiredResultError,
    ForkedProcessError,
    GLError,
    GLUnavailableError,
    GpuSegError,
    InputError,
    ShaderBuildError,
)
from .events import Event, EventKind
from .frame import ConfidenceFormat
from .postprocessor import SegmentationPostprocessor
from .reference import reference_postprocess
from .resident import GLTensor, ResidentMasks
from .resilience import Backoff, LossBudget, RecoveryPolicy
from .results import MaskView, PendingFrame
from .segmenter import ImageSegmenter, RunningMode, SegmentationResult, read_model_info
from .types import Activation, ProcessorStats, Result

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Activation",
    "Backoff",
    "CapacityError",
    "ClosedError",
    "ConfidenceFormat",
    "ContextLostError",
    "CudaArray",
    "CudaMasks",
    "Event",
    "EventKind",
    "ExpiredResultError",
    "ForkedProcessError",
    "GLError",
    "GLTensor",
    "GLUnavailableError",
    "GpuSegError",
    "ImageSegmenter",
    "InputError",
    "LossBudget",
    "MaskView",
    "PendingFrame",
    "ProcessorStats",
    "RecoveryPolicy",
    "ResidentMasks",
    "Result",
    "RunningMode",
    "SegmentationPostprocessor",
    "SegmentationResult",
    "ShaderBuildError",
    "__version__",
    "read_model_info",
    "reference_postprocess",
]


def __getattr__(name: str):
    # `gpu_seg.oracle` and `gpu_seg.testing` are imported on first use (mediapipe is optional).
    if name in ("oracle", "testing", "models"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
