"""Owned result arrays whose memory is used again once the caller has let go of them.

A fresh ``np.empty`` of a large result is memory the process has never touched: each first write
faults a page in and the kernel zeroes it. For deeplab's 174 MB of confidence masks that is a
third of a frame: on the H200 host a mapped readback took 18.8 ms into fresh arrays and 12.5 ms
into arrays written before (``confidence_out``); on the 2-core VM the CPU path took 31 ms and
19 ms. Arrays below glibc's mmap threshold (32 MB at most) come back from the heap already
touched, so only large results pay this.

:class:`RecycledArrays` hands out arrays as ``np.empty`` does and keeps a reference to the large
ones. Once nothing but that reference is left (the caller dropped the result and every array
derived from it: views, slices, ``memoryview``\\ s, tensors that share the memory), the array is
handed out again for a later frame of the same shape and dtype instead of a fresh one. Ownership
is the same as with ``np.empty``: gpu_seg never writes into an array, or its memory, while any
reference to it or to an array derived from it exists. Only a raw address kept without the
array (``array.ctypes.data`` as an int, a C library that keeps the pointer) is not seen, and
using such an address after dropping the array is already a use after free with plain numpy.

What is kept is bounded: at most ``max_bytes`` in all, ``MAX_PER_SHAPE`` arrays per shape and
dtype, the ``MAX_SHAPES`` shapes used last; arrays under ``min_bytes`` are never kept. When a new
array does not fit, the least recently used shapes make room (an array the caller still holds is
only forgotten, never freed or reused). :meth:`RecycledArrays.release` drops everything
(``trim()``, the idle release, ``close()``); :meth:`RecycledArrays.forget` drops arrays that a
frame attempt which did not end normally may still write into.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MIN_BYTES", "RecycledArrays"]

#: Default bound of the memory kept (two frames of deeplab's 21 masks at 1920x1080 and more).
DEFAULT_MAX_BYTES = 512 << 20
#: Default size under which arrays are never kept (the heap already reuses small ones).
DEFAULT_MIN_BYTES = 1 << 20


def _references(array: np.ndarray) -> int:
    """``sys.getrefcount`` of an array passed the way :meth:`RecycledArrays._free` passes it."""
    return sys.getrefcount(array)


class RecycledArrays:
    """A bounded set of result arrays, each handed out again once only this set references it.

    Args:
        max_bytes: the most bytes kept in all (0: keep nothing; every array is fresh).
        min_bytes: arrays smaller than this are never kept.

    Thread-safe.
    """

    #: The most arrays kept for one shape and dtype (a caller holding a few frames at a time).
    MAX_PER_SHAPE = 4
    #: The most shapes (with dtypes) kept: the confidence and category arrays of the latest
    #: geometry. A new one forgets the least recently used, so output sizes that change every frame
    #: (a window being resized) keep no memory of the sizes before.
    MAX_SHAPES = 2

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, min_bytes: int = DEFAULT_MIN_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.min_bytes = int(min_bytes)
        self._kept: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()
        self.reused = 0  # arrays handed out again
        self.allocated = 0  # fresh arrays handed out (kept or not)
        probe = [np.empty(0)]
        self._own_references = _references(probe[0])  # the count of an array only ``_kept`` holds

    # ----------------------------------------------------------------------------- public
    def take(self, shape: tuple[int, ...], dtype: np.dtype | type | str) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` with unspecified contents (as ``np.empty``)."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes or nbytes > self.max_bytes:
            self.allocated += 1
            return np.empty(shape, dtype)
        key = (shape, dtype.str)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                for index in range(len(kept)):
                    if self._free(kept, index):
                        self.reused += 1
                        array = kept[index]
                        array.flags.writeable = True  # a read-only view (MaskView) made it read-only
                        return array
            array = np.empty(shape, dtype)
            self.allocated += 1
            if (kept is None or len(kept) < self.MAX_PER_SHAPE) and self._make_room(nbytes):
                self._kept.setdefault(key, []).append(array)
                self._kept.move_to_end(key)
                self._bytes += nbytes
                while len(self._kept) > self.MAX_SHAPES:
                    _, dropped = self._kept.popitem(last=False)
                    self._bytes -= sum(a.nbytes for a in dropped)
            return array

    def forget(self, *arrays: np.ndarray | None) -> None:
        """Never hand these arrays out again (something may still write into them)."""
        with self._lock:
            for array in arrays:
                if array is None:
                    continue
                for key, kept in list(self._kept.items()):
                    for index, candidate in enumerate(kept):
                        if candidate is array:
                            del kept[index]
                            self._bytes -= array.nbytes
                            if not kept:
                                del self._kept[key]
                            break

    def release(self) -> int:
        """Drop every kept array (held ones stay the caller's); returns the bytes no longer kept."""
        with self._lock:
            released, self._bytes = self._bytes, 0
            self._kept.clear()
            return released

    @property
    def kept_bytes(self) -> int:
        """Bytes of the arrays kept now (handed out or waiting to be)."""
        return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return sum(len(kept) for kept in self._kept.values())

    # ----------------------------------------------------------------------------- helpers
    def _free(self, kept: list[np.ndarray], index: int) -> bool:
        """Whether only ``kept`` references ``kept[index]`` (nothing derived from it is alive)."""
        return _references(kept[index]) <= self._own_references

    def _make_room(self, nbytes: int) -> bool:
        """Forget the least recently used arrays until ``nbytes`` more fit; False if they never do."""
        while self._bytes + nbytes > self.max_bytes and self._kept:
            key, kept = next(iter(self._kept.items()))
            array = kept.pop(0)
            self._bytes -= array.nbytes
            if not kept:
                del self._kept[key]
        return self._bytes + nbytes <= self.max_bytes
