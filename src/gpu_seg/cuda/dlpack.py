"""Reading a DLPack tensor (``__dlpack__`` / ``__dlpack_device__``) without any array library.

:func:`read_dlpack` asks the producer for a legacy ``"dltensor"`` capsule (``DLManagedTensor``), reads
its ``DLTensor`` (data pointer + byte offset, device, dtype, shape, strides in elements) with ctypes
and returns it with the capsule. The capsule is never consumed (not renamed ``"used_dltensor"``): while
gpu_seg holds it the producer's memory stays alive, and when it is dropped the producer's own capsule
destructor frees it, as the protocol specifies for an unconsumed capsule.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

__all__ = ["DLPACK_CUDA_DEVICES", "DLPackTensor", "read_dlpack"]

#: ``DLDeviceType`` values of CUDA memory: kDLCUDA, kDLCUDAHost (pinned host), kDLCUDAManaged.
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
DLPACK_CUDA_DEVICES = (KDL_CUDA, KDL_CUDA_MANAGED)
#: ``DLDataTypeCode.kDLFloat``.
KDL_FLOAT = 2
#: ``__dlpack__(stream=...)`` for the legacy default stream, which gpu_seg's copies use.
LEGACY_DEFAULT_STREAM = 1


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass(frozen=True)
class DLPackTensor:
    """What a DLPack capsule describes. ``strides`` are in elements (None: compact C order)."""

    pointer: int  # data + byte_offset
    device_type: int
    device_id: int
    dtype: tuple[int, int, int]  # (code, bits, lanes)
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None
    capsule: object  # keeps the producer's memory alive while referenced

    @property
    def is_float32(self) -> bool:
        return self.dtype == (KDL_FLOAT, 32, 1)

    @property
    def c_contiguous(self) -> bool:
        """Whether the elements lie in C order (axes of size 1 may have any stride)."""
        if self.strides is None:
            return True
        step = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if size != 1 and stride != step:
                return False
            step *= size
        return True


def read_dlpack(tensor: object, stream: int | None = None) -> DLPackTensor:
    """Ask ``tensor`` for a DLPack capsule and read it (see the module docstring).

    Raises:
        TypeError: ``tensor.__dlpack__`` did not return a legacy ``"dltensor"`` capsule.
    """
    capsule = tensor.__dlpack__() if stream is None else tensor.__dlpack__(stream=stream)  # type: ignore[attr-defined]
    try:
        address = _get_pointer(capsule, b"dltensor")
    except ValueError as exc:  # a versioned or already consumed capsule
        raise TypeError(f"__dlpack__ returned {capsule!r}, not a 'dltensor' capsule") from exc
    managed = _DLManagedTensor.from_address(address)
    dl = managed.dl_tensor
    ndim = int(dl.ndim)
    shape = tuple(int(dl.shape[i]) for i in range(ndim))
    strides = tuple(int(dl.strides[i]) for i in range(ndim)) if dl.strides else None
    return DLPackTensor(
        pointer=int(dl.data or 0) + int(dl.byte_offset),
        device_type=int(dl.device.device_type),
        device_id=int(dl.device.device_id),
        dtype=(int(dl.dtype.code), int(dl.dtype.bits), int(dl.dtype.lanes)),
        shape=shape,
        strides=strides,
        capsule=capsule,
    )
