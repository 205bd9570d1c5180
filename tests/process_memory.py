"""Where RSS bounds mean something: the renderer gpu_seg's owned contexts run on.

On a software rasteriser (llvmpipe here and in CI) every GL object is process memory, so an RSS
bound catches a leaked texture, buffer or context. On an NVIDIA GPU the driver's own RSS grows with
every context it creates, whatever gpu_seg does (measured on an H200, driver 580: 0.5-3 MiB per
context generation, with direct or mapped readback, lost or released contexts; README "Context
loss"); there the tests still check that live GL objects return to baseline, and report the RSS
figure instead of judging it.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
import warnings

import numpy as np

import gpu_seg
from gpu_seg.gl.pipeline import is_software_renderer


@functools.cache
def owned_renderer() -> str:
    """``GL_RENDERER`` of an owned context on this machine."""
    with gpu_seg.SegmentationPostprocessor(backend="gl") as pp:
        pp.process(np.zeros((2, 2, 1), np.float32))
        return pp.context_info.renderer


def check_rss_growth(growth_kib: float, bound_kib: float, what: str) -> None:
    """Assert ``growth_kib <= bound_kib`` where GL memory is process memory; report it elsewhere."""
    renderer = owned_renderer()
    if is_software_renderer(renderer):
        assert growth_kib <= bound_kib, f"{what}: RSS grew {growth_kib:.0f} KiB (bound {bound_kib:.0f} KiB)"
    else:
        warnings.warn(
            f"{what}: RSS grew {growth_kib:.0f} KiB on {renderer} (bound {bound_kib:.0f} KiB judged on "
            "software rasterisers only: the GPU driver's own RSS grows per context)",
            stacklevel=2,
        )


def python_memory_kept(cycle, warm: int = 4, cycles: int = 20) -> float:
    """Bytes of Python allocations that each ``cycle()`` leaves behind (tracemalloc, after gc).

    Python memory leaves out the driver's own allocations (unlike RSS, see the module docstring):
    a bound on it holds on a GPU too."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        # Warmed up while tracing: what the warm-up cycles leave alive (the last generation's
        # objects, say) is traced too, so its release later counts, and the figure is growth only
        # (started after them, one cycle's live objects were added to every cycle's figure).
        for _ in range(warm):
            cycle()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(cycles):
            cycle()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not tracing:
            tracemalloc.stop()
    return (after - before) / cycles
