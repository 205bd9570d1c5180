"""Options and result types shared by every backend."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

__all__ = ["Activation", "Backend", "ProcessorStats", "Result"]

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


class ProcessorStats(TypedDict):
    """``SegmentationPostprocessor.stats``: counters since the processor was created and what its GL
    side holds now, one consistent snapshot (a plain ``dict`` at run time).

    Keys:
        frames, gl_frames, cpu_frames: frames computed, and where (``backoff_cpu_frames``: on the CPU
            while GL was backing off after losses; ``chosen_cpu_frames``: on the CPU because
            ``backend="auto"`` measured it faster on a software rasteriser).
        context_losses, rebuilds, trims: GL context losses met, generations rebuilt, trims (by
            ``trim()`` or the idle release).
        program_builds, link_failures, programs, program_evictions: GLSL programs built, failed,
            cached now, and released by the cache to stay within its bound (least recently used).
        fallback_active: frames go to the CPU until GL works again.
        generation: the number of the newest GL context generation (0: none yet).
        live_gl_objects: GL objects held now (the context, textures, buffers, programs...).
        gpu_memory: what the driver reports about video memory (``GL_NVX_gpu_memory_info``:
            total/dedicated/available/evicted KiB; ``GL_ATI_meminfo``: free texture KiB), or None.
        cpu_path: ``"fast"`` or ``"reference"``: the CPU path in use (None without one yet);
            ``cpu_threads``: its worker threads.
        speed_choice: configurations decided for GL, for the CPU, and undecided (``backend="auto"``
            on a software rasteriser), or None.
        last_gpu_ms: GPU time of the last GL frame (``time_gpu=True``), or None.
        gl_passes: ``"compute"`` or ``"fragment"``: the passes of the current generation, or None;
            ``last_resident_passes``: those of the last resident or CUDA frame (``"mixed"`` where
            both ran, ``"none"`` where it ran no pass), or None before one.
        recycled_arrays, recycled_bytes_kept, recycling_off: result memory handed out again, kept
            for that now, and why recycling is off on this interpreter (None where it is on).
    """

    frames: int
    gl_frames: int
    cpu_frames: int
    backoff_cpu_frames: int
    context_losses: int
    rebuilds: int
    trims: int
    program_builds: int
    link_failures: int
    program_evictions: int
    fallback_active: bool
    generation: int
    live_gl_objects: int
    programs: int
    gpu_memory: dict[str, object] | None
    cpu_path: str | None
    cpu_threads: int
    speed_choice: dict[str, int] | None
    chosen_cpu_frames: int
    last_gpu_ms: float | None
    gl_passes: str | None
    last_resident_passes: str | None
    recycled_arrays: int
    recycled_bytes_kept: int
    recycling_off: str | None
