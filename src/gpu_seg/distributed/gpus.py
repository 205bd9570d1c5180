"""The EGL device of the GPU Ray assigned to a worker.

Ray gives a GPU worker the ids of its GPUs (``ray.get_gpu_ids()``: the node's CUDA device
numbers) and sets ``CUDA_VISIBLE_DEVICES`` to them. EGL numbers its devices in its own order,
which ``CUDA_VISIBLE_DEVICES`` does not change. NVIDIA's driver says which CUDA device an EGL
device is (``EGL_NV_device_cuda``: ``eglQueryDeviceAttribEXT(device, EGL_CUDA_DEVICE_NV)``); the
worker's post-processor then opens that EGL device (``GPU_SEG_EGL_DEVICE``).

Which CUDA numbering the driver reports in (the machine's, or the process's, which counts the
visible devices only) is read from the answer: when it reports no more devices than
``CUDA_VISIBLE_DEVICES`` lists, it counts visible devices, and the worker's GPU is its position in
that list; otherwise the GPU's own number is matched. On one-GPU machines both are 0.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from ..errors import GLUnavailableError
from ..gl.egl import devices as egl_devices
from ..gl.egl.bindings import EGLError, library

__all__ = [
    "EGL_CUDA_DEVICE_NV",
    "DeviceChoice",
    "assign_egl_device",
    "egl_cuda_devices",
    "egl_device_for_gpu",
]

log = logging.getLogger("gpu_seg")

#: ``EGL_NV_device_cuda``: the CUDA device number of an EGL device.
EGL_CUDA_DEVICE_NV = 0x323A
#: ``EGLBoolean eglQueryDeviceAttribEXT(EGLDeviceEXT, EGLint attribute, EGLAttrib *value)``.
_QUERY_DEVICE_ATTRIB = ctypes.CFUNCTYPE(
    ctypes.c_uint, ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_ssize_t)
)


@dataclass(frozen=True)
class DeviceChoice:
    """The device a GPU worker renders on.

    Attributes:
        gpu_id: the GPU Ray assigned (its first, if several).
        egl_device: the EGL device index (``None``: no EGL device says it is that GPU).
        source: how it was chosen: ``"cuda"`` (matched through EGL_CUDA_DEVICE_NV), ``"env"`` (the
            user had set ``GPU_SEG_EGL_DEVICE``), ``"unmatched"`` (left at the default device).
    """

    gpu_id: str
    egl_device: int | None
    source: str


def egl_cuda_devices() -> dict[int, int]:
    """EGL device index -> CUDA device number, for the devices whose driver reports one.

    Empty where EGL has no device enumeration, no NVIDIA device, or no libEGL at all.
    """
    try:
        lib = library()
        found = list(egl_devices._iter_devices())
    except (EGLError, GLUnavailableError, OSError):  # GLUnavailableError: a forked process
        return {}
    address = lib.proc("eglQueryDeviceAttribEXT")
    if not address:
        return {}
    query = _QUERY_DEVICE_ATTRIB(address)
    numbers: dict[int, int] = {}
    for device in found:
        if "EGL_NV_device_cuda" not in device.extensions:
            continue
        value = ctypes.c_ssize_t(-1)
        if query(device.handle, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value >= 0:
            numbers[device.index] = int(value.value)
        else:
            lib.clear_error()
    return numbers


def egl_device_for_gpu(gpu_id: int | str, cuda_devices: Mapping[int, int], visible: str | None) -> int | None:
    """The EGL device index of CUDA device ``gpu_id``, or None when none matches.

    Args:
        gpu_id: the GPU's number on its machine (what Ray assigns).
        cuda_devices: :func:`egl_cuda_devices`.
        visible: the process's ``CUDA_VISIBLE_DEVICES`` (``None`` when unset).
    """
    target: int | None = None
    listed = [v.strip() for v in visible.split(",") if v.strip()] if visible is not None else None
    if listed is not None and len(cuda_devices) <= len(listed) and str(gpu_id) in listed:
        target = listed.index(str(gpu_id))  # the driver counts visible devices only
    else:
        try:
            target = int(gpu_id)
        except ValueError:
            return None
    return next((index for index, number in sorted(cuda_devices.items()) if number == target), None)


def assign_egl_device(
    gpu_ids: Sequence[int | str], environ: MutableMapping[str, str] | None = None
) -> DeviceChoice | None:
    """Point ``GPU_SEG_EGL_DEVICE`` at the EGL device of the first GPU in ``gpu_ids``.

    Call it in the worker before its post-processor opens a context. A ``GPU_SEG_EGL_DEVICE``
    the user set is kept. Returns None for a worker without a GPU.
    """
    environ = os.environ if environ is None else environ
    if not gpu_ids:
        return None
    gpu = str(gpu_ids[0])
    chosen = environ.get(egl_devices.ENV_DEVICE, "").strip()
    if chosen:
        return DeviceChoice(gpu, int(chosen) if chosen.isdigit() else None, "env")
    index = egl_device_for_gpu(gpu, egl_cuda_devices(), environ.get("CUDA_VISIBLE_DEVICES"))
    if index is None:
        log.warning("gpu_seg: no EGL device reports CUDA device %s; using the default EGL device", gpu)
        return DeviceChoice(gpu, None, "unmatched")
    environ[egl_devices.ENV_DEVICE] = str(index)
    return DeviceChoice(gpu, index, "cuda")
