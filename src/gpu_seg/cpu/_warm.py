"""Run every kernel specialisation once on tiny inputs (see :func:`gpu_seg.cpu.warm_up`)."""

from __future__ import annotations

import os

import numpy as np

from .fast import FastCPU

__all__ = ["exercise_every_kernel"]

_ACTIVATIONS = ("none", "sigmoid", "softmax")
_DTYPES = (np.float32, np.float16, np.uint8)


def exercise_every_kernel() -> None:
    """Both category strategies, every activation and confidence dtype, one and three channels."""
    rng = np.random.default_rng(0)
    width, height = 9, 7
    for shortcut in (True, False):
        fast = FastCPU(threads=1, shortcut=shortcut)
        for channels in (1, 3):
            tensor = rng.standard_normal((5, 6, channels)).astype(np.float32)
            tensor[0, 0, 0] = np.float32(1e-7)  # near the one-class sigmoid threshold
            for activation in _ACTIVATIONS:
                fast.category_mask(tensor, activation, width, height, np.empty((height, width), np.uint8))
                if not shortcut:
                    continue
                for dtype in _DTYPES:
                    out = np.empty((channels, height, width), dtype)
                    fast.confidence_masks(tensor, activation, width, height, out)
                subset = np.empty((1, 5, 6), np.float32)  # identity size, one selected channel
                fast.confidence_masks(tensor, activation, 6, 5, subset, channels=[channels - 1])
        fast.close()
    # Once more on a few threads at a size that splits into bands: the first frame of a process
    # otherwise pays one-time costs in fresh worker threads (allocator arenas, thread states).
    tensor = rng.standard_normal((48, 40, 2)).astype(np.float32)
    with FastCPU(threads=min(4, os.cpu_count() or 1)) as fast:
        for activation in _ACTIVATIONS:
            fast.confidence_masks(tensor, activation, 200, 160, np.empty((2, 160, 200), np.float32))
            fast.category_mask(tensor, activation, 200, 160, np.empty((160, 200), np.uint8))
