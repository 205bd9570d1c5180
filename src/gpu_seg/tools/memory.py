"""Resident memory as the soak measures it: VmRSS after freeing what the allocator keeps."""

from __future__ import annotations

import ctypes
import functools
import gc

__all__ = ["measure_rss", "rss_kib"]


def rss_kib() -> tuple[int, str]:
    """Current resident set size in KiB and where it came from.

    ``VmRSS`` from ``/proc/self/status``; without procfs, the peak RSS from ``getrusage``
    (``ru_maxrss``, KiB on Linux), which can only grow.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]), "VmRSS"
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "ru_maxrss (peak)"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (has ``mallinfo2`` and ``malloc_trim``), else ``None``."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.mallinfo2.argtypes = []
        libc.malloc_trim.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def measure_rss() -> tuple[int, int | None, str]:
    """``(RSS KiB, malloc in-use KiB or None, RSS source)`` after freeing what can be freed.

    Runs ``gc.collect()`` and, on glibc, ``malloc_trim(0)`` first, so that free memory the
    allocator keeps does not count. This matters here: glibc gives each new thread an arena of its
    own, and when a rebuilt context's GL thread starts before the previous GL thread has handed its
    arena back, a second arena fills with about 11 MB of Mesa's allocations once; that memory is
    free after the old generation is dropped, but stays resident until trimmed.
    """
    gc.collect()
    libc = _glibc()
    in_use = None
    if libc is not None:
        libc.malloc_trim(0)
        info = libc.mallinfo2()
        in_use = (info.uordblks + info.hblkhd) // 1024
    rss, source = rss_kib()
    return rss, in_use, source
