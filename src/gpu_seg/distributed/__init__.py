"""Segment image and video collections on a Ray cluster: ``gpu-seg segment --ray``.

:func:`segment_on_ray` runs the single-process engine (:mod:`gpu_seg.segmenter.batch`) in a pool of
Ray Data actors, each keeping one ``ImageSegmenter`` across batches, and writes the same files and
``manifest.jsonl``. Videos are split into frame ranges, GPU workers render on the GPU Ray assigned
them, a worker that dies has its tasks rerun. Without an address a local Ray is started.

Needs ``pip install "gpu_seg[ray]"``; this package imports Ray only when a run starts.
"""

from __future__ import annotations

from .driver import segment_on_ray
from .gpus import DeviceChoice, assign_egl_device, egl_cuda_devices, egl_device_for_gpu
from .plan import DEFAULT_FRAMES_PER_TASK, Task, plan_tasks
from .report import RayReport, WorkerReport
from .session import RayUnavailableError
from .worker import SegmentWorker

__all__ = [
    "DEFAULT_FRAMES_PER_TASK",
    "DeviceChoice",
    "RayReport",
    "RayUnavailableError",
    "SegmentWorker",
    "Task",
    "WorkerReport",
    "assign_egl_device",
    "egl_cuda_devices",
    "egl_device_for_gpu",
    "plan_tasks",
    "segment_on_ray",
]
