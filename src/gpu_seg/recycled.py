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
reference to it or to an array derived from it exists. A weak reference does not hold an array,
so a free array that still has weak references is let go of instead of reused (they die as they
would with ``np.empty``). Only a raw address kept without the array (``array.ctypes.data`` as an
int, a C library that keeps the pointer) is not seen: using it after dropping the array is a use
after free with plain numpy too, and here it reads another frame's masks rather than crashing.

Reference counts tell a free array only on CPython with the GIL; on a free-threaded build, or
where ``sys.getrefcount`` is missing, nothing is kept (``RecycledArrays.disabled`` says why).

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
import weakref
from collections import OrderedDict

import numpy as np

from . import forks

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MIN_BYTES", "RecycledArrays"]

#: Default bound of the memory kept (two frames of deeplab's 21 masks at 1920x1080 and more).
DEFAULT_MAX_BYTES = 512 << 20
#: Default size under which arrays are never kept (the heap already reuses small ones).
DEFAULT_MIN_BYTES = 1 << 20


def _references(array: np.ndarray) -> int:
    """``sys.getrefcount`` of an array passed the way :meth:`RecycledArrays._free` passes it."""
    return sys.getrefcount(array)


def _why_refcounts_cannot_tell() -> str | None:
    """Why this interpreter's reference counts cannot tell that nothing else holds an array
    (recycling is then off), or None."""
    if not hasattr(sys, "getrefcount"):
        return "this Python has no sys.getrefcount"
    gil = getattr(sys, "_is_gil_enabled", None)
    if gil is not None and not gil():
        return "free-threaded Python: a reference count alone does not prove an object unshared"
    return None


class RecycledArrays:
    """A bounded set of result arrays, each handed out again once only this set references it.

    Args:
        max_bytes: the most bytes kept in all (0: keep nothing; every array is fresh).
        min_bytes: arrays smaller than this are never kept.

    Attributes:
        disabled: why nothing is kept on this interpreter (see :func:`_why_refcounts_cannot_tell`),
            or None.

    Thread-safe. Arrays the set lets go of are freed after its lock is released (a weak
    reference's callback may call back into it).
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
        self.disabled = _why_refcounts_cannot_tell() or self._calibrate()
        if self.disabled:
            self.max_bytes = 0
        forks.renew_locks(self, "_lock")
        forks.track(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child (its lock is new): nothing kept (a parent thread may have been
        changing what is kept when it forked)."""
        self.release()

    def _calibrate(self) -> str | None:
        """Set the count of an array only ``_kept`` holds; check that :meth:`_free` tells a free
        array from a held one (else say why recycling is off)."""
        probe = [np.empty(0)]
        self._own_references = _references(probe[0])
        free = self._free(probe, 0)
        held = probe[0]
        seen_held = not self._free(probe, 0)
        del held
        return None if free and seen_held else "reference counts do not tell a held array from a free one"

    # ----------------------------------------------------------------------------- public
    def take(self, shape: tuple[int, ...], dtype: np.dtype | type | str) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` with unspecified contents (as ``np.empty``)."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes or nbytes > self.max_bytes:
            with self._lock:
                self.allocated += 1
            return np.empty(shape, dtype)
        dropped: list[np.ndarray] = []  # freed once the lock is released
        with self._lock:
            array = self._reusable((shape, dtype.str), dropped)
            if array is None:
                array = self._fresh((shape, dtype.str), nbytes, dropped)
        del dropped
        return array

    def forget(self, *arrays: np.ndarray | None) -> None:
        """Never hand these arrays out again (something may still write into them)."""
        dropped: list[np.ndarray] = []
        with self._lock:
            for array in arrays:
                for key, kept in list(self._kept.items()):
                    index = next((i for i, candidate in enumerate(kept) if candidate is array), None)
                    if index is not None:
                        self._drop(key, index, dropped)
                        break
        del dropped

    def release(self) -> int:
        """Drop every kept array (held ones stay the caller's); returns the bytes no longer kept."""
        with self._lock:
            released, self._bytes = self._bytes, 0
            dropped, self._kept = self._kept, OrderedDict()
        del dropped
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

    def _reusable(self, key: tuple, dropped: list[np.ndarray]) -> np.ndarray | None:
        """A kept array of ``key`` that nothing else references, or None. A free array that still
        has weak references is let go of instead (they must die, as with a fresh array)."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        self._kept.move_to_end(key)
        index = 0
        while index < len(kept):
            if not self._free(kept, index):
                index += 1
            elif weakref.getweakrefcount(kept[index]):
                self._drop(key, index, dropped)
                if key not in self._kept:
                    return None
            else:
                self.reused += 1
                array = kept[index]
                array.flags.writeable = True  # a read-only view (MaskView) made it read-only
                return array
        return None

    def _fresh(self, key: tuple, nbytes: int, dropped: list[np.ndarray]) -> np.ndarray:
        """A new array of ``key``, kept if the bounds allow."""
        shape, dtype = key
        array = np.empty(shape, dtype)
        self.allocated += 1
        kept = self._kept.get(key)
        if kept is not None and len(kept) >= self.MAX_PER_SHAPE:
            return array
        self._make_room(nbytes, dropped)
        self._kept.setdefault(key, []).append(array)
        self._kept.move_to_end(key)
        self._bytes += nbytes
        while len(self._kept) > self.MAX_SHAPES:
            old_key = next(iter(self._kept))
            while old_key in self._kept:
                self._drop(old_key, 0, dropped)
        return array

    def _make_room(self, nbytes: int, dropped: list[np.ndarray]) -> None:
        """Forget the least recently used shapes' arrays until ``nbytes`` more fit (``nbytes`` is at
        most ``max_bytes``): of each shape, those the caller holds first (forgetting them frees
        nothing and loses no reuse now), then the free ones."""
        while self._bytes + nbytes > self.max_bytes and self._kept:
            key, kept = next(iter(self._kept.items()))
            held = next((i for i in range(len(kept)) if not self._free(kept, i)), 0)
            self._drop(key, held, dropped)

    def _drop(self, key: tuple, index: int, dropped: list[np.ndarray]) -> None:
        """Stop keeping ``self._kept[key][index]`` (moved to ``dropped``, freed by the caller)."""
        kept = self._kept[key]
        array = kept.pop(index)
        self._bytes -= array.nbytes
        dropped.append(array)
        if not kept:
            del self._kept[key]
