"""CUDA arrays in and out: ``__cuda_array_interface__`` tensors, owned device arrays, a bounded pool.

Inputs: any object with ``__cuda_array_interface__`` (torch, CuPy, JAX, Numba), or a DLPack producer
(``__dlpack__`` / ``__dlpack_device__`` on a CUDA device): float32, C-contiguous, ``(H, W)``,
``(H, W, C)`` or ``(1, H, W, C)``, in device (or managed) memory.

Outputs (:class:`CudaArray`): device memory that gpu_seg allocated and that the array *owns*: it is
valid for as long as the array object lives (``torch.as_tensor(x, device="cuda")`` and
``cupy.asarray(x)`` keep a reference to it, so their views stay valid too), never overwritten by a
later frame. When the last reference goes, the memory returns to a small per-processor pool
(:class:`DevicePool`, at most ``MAX_FREE`` blocks kept) that the next frames reuse, so steady-state
frames call no ``cudaMalloc``; ``trim()``/``close()`` free the pooled blocks.
"""

from __future__ import annotations

import numbers
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .dlpack import DLPACK_CUDA_DEVICES, DLPackTensor, read_dlpack
from .dlpack import LEGACY_DEFAULT_STREAM as DLPACK_LEGACY_STREAM
from .runtime import check, runtime

__all__ = ["CudaArray", "CudaTensor", "DevicePool", "cuda_tensor", "dlpack_layout", "parse_interface"]

#: ``__cuda_array_interface__["stream"]`` of results: the legacy default stream (1), which the
#: copies are issued on; consumers synchronise with it (CAI v3).
LEGACY_DEFAULT_STREAM = 1


@dataclass(frozen=True)
class CudaTensor:
    """A validated CUDA input: device pointer, ``(H, W, C)``, CUDA device ordinal, producer stream."""

    pointer: int
    height: int
    width: int
    channels: int
    device: int
    stream: int | None
    owner: object  # keeps the producer's memory alive during the frame


def cuda_tensor(tensor: object) -> CudaTensor:
    """Validate ``tensor`` (see the module docstring) and find its device.

    Raises:
        InputError: (``"tensor"``) not a CUDA array, host memory, wrong dtype/shape/strides.
        GLUnavailableError: cuda-python is missing.
        CudaError: the pointer query failed.
    """
    pointer, (height, width, channels), stream, owner = _parse(tensor)
    return CudaTensor(pointer, height, width, channels, _device_of(pointer), stream, owner)


def parse_interface(tensor: object) -> tuple[int, tuple[int, int, int], int | None]:
    """``(pointer, (H, W, C), producer stream)`` from ``__cuda_array_interface__`` (or DLPack's
    ``__dlpack__`` on a CUDA device); no CUDA runtime call.

    Raises:
        InputError: (``"tensor"``) no interface (a host array), wrong dtype, shape or strides.
    """
    pointer, shape, stream, _ = _parse(tensor)
    return pointer, shape, stream


def _parse(tensor: object) -> tuple[int, tuple[int, int, int], int | None, object]:
    """``parse_interface`` and what keeps the memory alive (the tensor, or its DLPack capsule)."""
    interface = getattr(tensor, "__cuda_array_interface__", None)
    if not isinstance(interface, dict):
        if callable(getattr(tensor, "__dlpack__", None)) and callable(
            getattr(tensor, "__dlpack_device__", None)
        ):
            return _parse_dlpack(tensor)
        kind = (
            "a numpy (host) array: use process()" if isinstance(tensor, np.ndarray) else type(tensor).__name__
        )
        raise InputError(
            "tensor",
            "expected a CUDA array with __cuda_array_interface__ or __dlpack__ (torch, CuPy, JAX, Numba), "
            f"got {kind}",
        )
    raw_shape = _integers(interface.get("shape"), "shape")
    typestr = str(interface.get("typestr", ""))
    if typestr not in ("<f4", "=f4"):
        raise InputError("tensor", f"dtype {typestr!r} is not supported; pass float32 ('<f4')")
    strides = interface.get("strides")
    if strides is not None and not _c_contiguous(raw_shape, _integers(strides, "strides")):
        raise InputError("tensor", f"strides {tuple(strides)} are not C-contiguous; pass a contiguous tensor")
    data = interface.get("data")
    if not isinstance(data, (tuple, list)) or not data or not _integral(data[0]):
        raise InputError("tensor", f"__cuda_array_interface__ 'data' {data!r} is not (pointer, read_only)")
    stream = interface.get("stream")
    if stream is not None and not _integral(stream):
        raise InputError("tensor", f"__cuda_array_interface__ 'stream' {stream!r} is not None or an int")
    return int(data[0]), _hwc(raw_shape), None if stream is None else int(stream), tensor


def _integral(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _integers(values: object, field: str) -> tuple[int, ...]:
    """A ``__cuda_array_interface__`` tuple of ints (``shape``, ``strides``)."""
    if not isinstance(values, (tuple, list)) or not all(_integral(v) for v in values):
        raise InputError("tensor", f"__cuda_array_interface__ {field!r} {values!r} is not a tuple of ints")
    return tuple(int(v) for v in values)


def _parse_dlpack(tensor: object) -> tuple[int, tuple[int, int, int], int | None, object]:
    """A DLPack producer on a CUDA device (``__dlpack__(stream=1)``: it orders its work before the
    legacy default stream, which the copies use)."""
    device_type, _ = tensor.__dlpack_device__()  # type: ignore[attr-defined]
    if int(device_type) not in DLPACK_CUDA_DEVICES:
        raise InputError(
            "tensor",
            f"a DLPack tensor in host memory (device type {int(device_type)}): use process(), or move it "
            "to the CUDA device",
        )
    try:
        view = read_dlpack(tensor, stream=DLPACK_LEGACY_STREAM)
    except TypeError as exc:
        raise InputError("tensor", f"unusable __dlpack__: {exc}") from exc
    return (*dlpack_layout(view), None, view.capsule)


def dlpack_layout(view: DLPackTensor) -> tuple[int, tuple[int, int, int]]:
    """``(pointer, (H, W, C))`` of a DLPack tensor, checked like a ``__cuda_array_interface__`` one."""
    if not view.is_float32:
        raise InputError("tensor", f"DLPack dtype (code, bits, lanes) {view.dtype} is not float32")
    if not view.c_contiguous:
        raise InputError("tensor", f"strides {view.strides} (elements) are not C-contiguous")
    return view.pointer, _hwc(view.shape)


def _hwc(raw_shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = raw_shape
    if len(shape) == 4:
        if shape[0] != 1:
            raise InputError("tensor", f"batch size {shape[0]} in shape {shape}; only batch 1 is supported")
        shape = shape[1:]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) <= 0:
        raise InputError("tensor", f"shape {raw_shape} is not a non-empty (H, W), (H, W, C) or (1, H, W, C)")
    return shape  # type: ignore[return-value]


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether float32 ``strides`` (bytes) lay ``shape`` out in C order (size-1 axes may have any)."""
    if len(shape) != len(strides):
        return False
    step = 4
    for size, stride in zip(reversed(shape), reversed(strides), strict=True):
        if size != 1 and stride != step:
            return False
        step *= size
    return True


def _device_of(pointer: int) -> int:
    rt = runtime()
    attributes = check(rt.cudaPointerGetAttributes(pointer), "cudaPointerGetAttributes")
    memory = rt.cudaMemoryType
    if attributes.type not in (memory.cudaMemoryTypeDevice, memory.cudaMemoryTypeManaged):
        raise InputError(
            "tensor",
            "its __cuda_array_interface__ points to host memory; pass a tensor on the CUDA device "
            "(or use process())",
        )
    return int(attributes.device)


class DevicePool:
    """Device memory blocks of one CUDA device, reused across frames (see the module docstring)."""

    #: Free blocks kept for reuse; past this the largest surplus block is freed.
    MAX_FREE = 8

    def __init__(self, device: int) -> None:
        self.device = device
        self._free: list[tuple[int, int]] = []  # (nbytes, pointer)
        self._lock = threading.Lock()
        self._closed = False
        self.allocations = 0  #: cudaMalloc calls so far (flat in steady state)

    def take(self, nbytes: int) -> int:
        """A block of exactly ``nbytes`` (reused when one is free), as a device pointer."""
        with self._lock:
            for index, (size, pointer) in enumerate(self._free):
                if size == nbytes:
                    del self._free[index]
                    return pointer
        self.allocations += 1
        return int(check(runtime().cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def give_back(self, nbytes: int, pointer: int) -> None:
        """Called when the last reference to a result goes (any thread): keep the block or free it."""
        surplus = None
        with self._lock:
            if self._closed:
                surplus = pointer
            else:
                self._free.append((nbytes, pointer))
                if len(self._free) > self.MAX_FREE:
                    self._free.sort()
                    surplus = self._free.pop(0)[1]
        if surplus is not None:
            _free(surplus)

    def trim(self) -> None:
        """Free every pooled block (arrays still referenced keep theirs)."""
        with self._lock:
            blocks, self._free = self._free, []
        for _, pointer in blocks:
            _free(pointer)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.trim()


def _free(pointer: int) -> None:
    try:
        check(runtime().cudaFree(pointer), "cudaFree")
    except Exception:  # interpreter shutdown or a dead driver: nothing more to do
        pass


class CudaArray:
    """A C-contiguous array in device memory that it owns (see the module docstring).

    Exposes ``__cuda_array_interface__`` (v3, ``stream`` = the legacy default stream), so
    ``torch.as_tensor(array, device="cuda")`` and ``cupy.asarray(array)`` wrap it without a copy.

    Attributes:
        shape, dtype: as numpy spells them.
        pointer: the device address.
        device: the CUDA device ordinal.
    """

    def __init__(self, pool: DevicePool, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.device = pool.device
        self.pointer = pool.take(self.nbytes)
        weakref.finalize(self, pool.give_back, self.nbytes, self.pointer)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.pointer, False),
            "version": 3,
            "strides": None,
            "stream": LEGACY_DEFAULT_STREAM,
        }

    def to_host(self) -> np.ndarray:
        """A host copy (synchronous)."""
        rt = runtime()
        out = np.empty(self.shape, self.dtype)
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpy(out.ctypes.data, self.pointer, self.nbytes, kind), "cudaMemcpy")
        return out

    def __repr__(self) -> str:
        return f"<CudaArray {self.dtype} {self.shape} cuda:{self.device} 0x{self.pointer:x}>"
