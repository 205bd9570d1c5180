"""A prepared backend (:class:`Runner`) and the names of every backend the bench knows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cases import MODES, BenchCase

__all__ = [
    "BACKENDS",
    "VARIANTS",
    "BackendUnavailableError",
    "Runner",
    "float32_outputs",
    "nominal_bytes_out",
]

#: Backend keys -> labels, in table order. ``gl_*`` keys after ``gl`` are variants of the GL path.
BACKENDS: dict[str, str] = {
    "gl": "gpu_seg GL",
    "gl_alloc": "gpu_seg GL (no prealloc)",
    "gl_view": "gpu_seg GL zero-copy view",
    "gl_async": "gpu_seg GL frames in flight (ms/frame)",
    "cpu": "gpu_seg CPU (fast)",
    "reference": "gpu_seg numpy reference",
    "opencv": "OpenCV",
    "torch": "PyTorch CPU",
    "torch_cuda": "PyTorch CUDA host->host (pinned)",
    "torch_cuda_resident": "PyTorch CUDA resident",
    "mediapipe": "MediaPipe CPU",
    "gl_f16": "gpu_seg GL f16 conf",
    "gl_u8": "gpu_seg GL u8 conf",
    "gl_subset": "gpu_seg GL 1-channel conf",
    "e2e_auto": "gpu_seg ImageSegmenter (auto)",
    "e2e_cpu": "gpu_seg ImageSegmenter (cpu)",
    "e2e_mediapipe": "MediaPipe ImageSegmenter",
    "e2e_video": "gpu_seg ImageSegmenter video mode",
    "e2e_mediapipe_video": "MediaPipe ImageSegmenter video mode",
}

#: The GL variants: key -> the processor options that make them.
VARIANTS: dict[str, dict[str, Any]] = {
    "gl_f16": {"confidence_dtype": "float16"},
    "gl_u8": {"confidence_dtype": "uint8"},
    "gl_subset": {"confidence_channels": [1]},
}

#: What a backend's last masks are: (confidence planes or None, category mask or None).
Outputs = tuple[Sequence[np.ndarray] | np.ndarray | None, np.ndarray | None]


class BackendUnavailableError(Exception):
    """A backend cannot run here (not installed, no GL, option not supported); the message says why."""


@dataclass
class Runner:
    """A prepared backend for one case and output mode: ``runner()`` is what gets timed."""

    key: str
    label: str
    call: Callable[[], None]
    outputs: Callable[[], Outputs]
    bytes_out: int
    close: Callable[[], None] = lambda: None
    #: The reference channels the confidence planes hold (None: all of them).
    channels: tuple[int, ...] | None = None
    #: Free text for the row's ``note`` (for example where the post-processing ran).
    note: str = ""
    #: Frames one call computes (a chain of frames in flight): timings are per frame.
    frames_per_call: int = 1

    def __call__(self) -> None:
        self.call()


def float32_outputs(case: BenchCase, mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Preallocated float32 ``(C, H, W)`` confidence planes and uint8 ``(H, W)`` mask for ``mode``."""
    conf, cat = MODES[mode]
    width, height = case.output_size
    return (
        np.empty((case.channels, height, width), np.float32) if conf else None,
        np.empty((height, width), np.uint8) if cat else None,
    )


def nominal_bytes_out(case: BenchCase, mode: str) -> int:
    """Bytes of float32 confidence masks and a uint8 category mask in ``mode``."""
    conf, cat = MODES[mode]
    width, height = case.output_size
    return (4 * case.channels * width * height if conf else 0) + (width * height if cat else 0)
