"""The CUDA runtime through cuda-python (optional extra ``cuda``): loading, error checks, devices.

``cuda.bindings.runtime`` (cuda-python 12.6+ / cuda-bindings) is used, else the older
``cuda.cudart`` module; both expose the C runtime API one to one (every call returns a tuple whose
first element is the ``cudaError_t``). Nothing here runs unless a caller asks for CUDA.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
from typing import Any

from ..errors import GLUnavailableError, GpuSegError

__all__ = ["CudaError", "check", "egl_cuda_device", "runtime"]

#: ``EGL_CUDA_DEVICE_NV`` (EGL_NV_device_cuda): the CUDA ordinal of an EGL device.
EGL_CUDA_DEVICE_NV = 0x323A


class CudaError(GpuSegError, RuntimeError):
    """A CUDA runtime call failed (``code`` is the ``cudaError_t`` name)."""

    def __init__(self, call: str, code: str) -> None:
        super().__init__(f"{call} failed: {code}")
        self.call = call
        self.code = code


@functools.cache
def _load() -> Any:
    errors = []
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    return errors


def runtime() -> Any:
    """The CUDA runtime module.

    Raises:
        GLUnavailableError: cuda-python is not installed (``pip install 'gpu_seg[cuda]'``).
    """
    module = _load()
    if isinstance(module, list):
        raise GLUnavailableError(
            "CUDA results need cuda-python (pip install 'gpu_seg[cuda]'); cannot import " + "; ".join(module)
        )
    return module


def error_name(rt: Any, error: Any) -> str:
    try:
        result = rt.cudaGetErrorName(error)
        return bytes(result[1]).decode() if result[1] is not None else str(error)
    except Exception:  # the name is for a message only
        return str(error)


def check(result: Any, call: str) -> Any:
    """The value(s) of a runtime call's result tuple; :class:`CudaError` when it failed."""
    rt = runtime()
    values = result if isinstance(result, tuple) else (result,)
    error, rest = values[0], values[1:]
    if error != rt.cudaError_t.cudaSuccess:
        raise CudaError(call, error_name(rt, error))
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def egl_cuda_device(device_handle: int) -> int | None:
    """``EGL_CUDA_DEVICE_NV`` of an ``EGLDeviceEXT`` (``eglQueryDeviceAttribEXT``), or None when the
    device does not say (not an NVIDIA device, or the entry point is missing)."""
    from ..gl import egl

    lib = egl.library()
    address = lib.proc("eglQueryDeviceAttribEXT")
    if not address:
        return None
    query = ctypes.CFUNCTYPE(
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_ssize_t)
    )(address)
    value = ctypes.c_ssize_t(-1)
    if not query(device_handle, EGL_CUDA_DEVICE_NV, ctypes.byref(value)):
        lib.clear_error()
        return None
    return int(value.value)
