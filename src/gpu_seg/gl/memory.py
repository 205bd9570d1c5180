"""GPU memory as the driver reports it (where it does): for ``stats`` and the soak's idle mode.

Two vendor extensions say how much video memory is free; other drivers (Mesa llvmpipe among
them) say nothing, and then the report is ``None``.

* ``GL_NVX_gpu_memory_info`` (NVIDIA): total, dedicated and currently available memory, and
  what was evicted, in KiB.
* ``GL_ATI_meminfo`` (AMD): free texture memory in KiB (the first of the four values).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from .constants import (
    GL_GPU_MEMORY_INFO_CURRENT_AVAILABLE_VIDMEM_NVX,
    GL_GPU_MEMORY_INFO_DEDICATED_VIDMEM_NVX,
    GL_GPU_MEMORY_INFO_EVICTED_MEMORY_NVX,
    GL_GPU_MEMORY_INFO_TOTAL_AVAILABLE_MEMORY_NVX,
    GL_TEXTURE_FREE_MEMORY_ATI,
)

__all__ = ["query_gpu_memory"]


def query_gpu_memory(
    get_integer: Callable[[int], int], extensions: Collection[str]
) -> dict[str, object] | None:
    """What the current context's driver says about video memory, or None when it says nothing.

    Args:
        get_integer: ``glGetIntegerv`` for one value, on the current context.
        extensions: the context's GL extensions.
    """
    if "GL_NVX_gpu_memory_info" in extensions:
        return {
            "source": "GL_NVX_gpu_memory_info",
            "total_kib": get_integer(GL_GPU_MEMORY_INFO_TOTAL_AVAILABLE_MEMORY_NVX),
            "dedicated_kib": get_integer(GL_GPU_MEMORY_INFO_DEDICATED_VIDMEM_NVX),
            "available_kib": get_integer(GL_GPU_MEMORY_INFO_CURRENT_AVAILABLE_VIDMEM_NVX),
            "evicted_kib": get_integer(GL_GPU_MEMORY_INFO_EVICTED_MEMORY_NVX),
        }
    if "GL_ATI_meminfo" in extensions:
        return {"source": "GL_ATI_meminfo", "texture_free_kib": get_integer(GL_TEXTURE_FREE_MEMORY_ATI)}
    return None
