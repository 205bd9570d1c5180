"""CUDA tensor in, CUDA arrays out, through CUDA-GL interop (``process_cuda``); no host copy anywhere.

A frame, all on the GL thread with the context current (see ``docs/gpu-data-path.md`` section 3)::

    CUDA tensor --cudaMemcpy2DAsync--> registered GL buffer (the tensor texture's texel layout: each
        pixel's C floats at a pitch of lanes * groups floats, padding lanes zero from its creation)
      --pixel unpack--> tensor texture --the GL passes (process_resident's)-->
        fragment passes: exact-size textures --cudaMemcpy2DFromArrayAsync--> device arrays
        compute passes:  storage buffers     --cudaMemcpy2DAsync (mapped buffer pointer)--> device arrays
      (arrays that the results own. Confidence: one (H, W) plane per mask, from its texture or from
      its range of the planes buffer; category: the packed rows, R32UI texels or quads(W) uints,
      copied W bytes wide: their first W bytes are exactly the (H, W) uint8 mask row)

Which copies a frame needs is planned without CUDA (:func:`texture_copies`, :func:`buffer_copies`)
so that the tests can check the plan on any GL 4.3 context by running it on host copies.

Registrations (``cudaGraphicsGLRegisterBuffer/Image``) are made once per GL object of a generation
and kept in :class:`Registrations`; the pipeline tells it before it releases pooled objects
(``GLPipeline.release_hooks``), so every registration ends before its GL object is deleted. After a
loss, the dead generation's registrations are unregistered with their errors ignored. Map and unmap
bracket each use, all of a step's resources in one call (``cudaGraphicsMapResources`` orders the GL
work before the CUDA copies, unmap the CUDA copies before later GL work). Copies go on the legacy
default stream; results say so in ``__cuda_array_interface__["stream"]``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import moderngl
import numpy as np

from ..errors import ContextLostError, GLUnavailableError, GpuSegError, InputError
from ..frame import Frame
from ..gl.plan import TensorLayout
from ..gl.resident import GLSource, ResidentImages
from ..supervisor import Generation
from .arrays import CudaArray, CudaTensor, DevicePool
from .runtime import CudaError, check, egl_cuda_device, runtime

__all__ = [
    "BufferCopy",
    "CudaBridge",
    "NotCudaDeviceError",
    "Registrations",
    "TextureCopy",
    "buffer_copies",
    "texture_copies",
]

log = logging.getLogger("gpu_seg")

GL_TEXTURE_2D = 0x0DE1
_NULL_HANDLE = (
    "cudaGraphicsGLRegisterImage returned a null handle without an error: a known bug of "
    "cuda-bindings 12.9.3 (NVIDIA/cuda-python#1122); install another cuda-python version"
)


@dataclass(frozen=True)
class TextureCopy:
    """A result texture into a result array: ``height`` rows of ``row_bytes`` from texel (0, 0)
    (``cudaMemcpy2DFromArrayAsync``; the packed category texture: its first W bytes per row)."""

    texture: moderngl.Texture
    destination: str  # "confidence" or "category": which result array
    destination_offset: int  # bytes
    row_bytes: int  # bytes per row, in the texture's array and in the result (tightly packed)
    height: int


@dataclass(frozen=True)
class BufferCopy:
    """A range of a compute pass's storage buffer into a result array (``cudaMemcpy2DAsync`` from
    the mapped buffer's pointer): ``height`` rows of ``row_bytes``, ``source_pitch`` bytes apart from
    byte ``source_offset`` of the buffer, tightly packed from byte ``destination_offset`` of the
    result."""

    buffer: moderngl.Buffer
    source_offset: int
    source_pitch: int
    destination: str  # "confidence" or "category"
    destination_offset: int
    row_bytes: int
    height: int


def texture_copies(images: ResidentImages, itemsize: int) -> list[TextureCopy]:
    """The copies out of the fragment passes' textures (confidence ``itemsize`` bytes per texel)."""
    width, height = images.width, images.height
    plane = width * height * itemsize
    copies = []
    if not images.confidence_buffers:
        copies += [
            TextureCopy(texture, "confidence", index * plane, width * itemsize, height)
            for index, texture in enumerate(images.confidence)
        ]
    if images.category_packed is not None:  # its rows' first W bytes are the mask's rows
        copies.append(TextureCopy(images.category_packed, "category", 0, width, height))
    return copies


def buffer_copies(images: ResidentImages, itemsize: int) -> list[BufferCopy]:
    """The copies out of the compute passes' storage buffers: each float32 plane (rows of W floats,
    from its 256-byte aligned start) into plane k of the confidence array, and the first W bytes of
    each packed category row (rows of quads(W) uints) into the category array."""
    width, height = images.width, images.height
    plane = width * height * itemsize
    copies = [
        BufferCopy(read.buffer, read.offset, read.width * read.itemsize, "confidence", index * plane,
                   width * itemsize, height)
        for index, read in enumerate(images.confidence_buffers)
    ]  # fmt: skip
    read = images.category_buffer
    if read is not None:
        pitch = read.width * read.itemsize  # quads(W) uints
        copies.append(BufferCopy(read.buffer, read.offset, pitch, "category", 0, width, height))
    return copies


class NotCudaDeviceError(GpuSegError):
    """The GL context does not run on a CUDA device (raised on the GL thread, reported by the caller
    as :class:`~gpu_seg.errors.GLUnavailableError` without entering the CPU fallback)."""


class Registrations:
    """CUDA registrations of one generation's GL objects, keyed by the moderngl object."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def resource(self, obj: moderngl.Buffer | moderngl.Texture, read_only: bool) -> Any:
        """The registered resource of ``obj`` (registered now if it is not yet)."""
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        if entry is not None:  # a dead object whose id was reused: never happens while hooks run
            self._unregister(self._entries.pop(id(obj))[1])
        rt = runtime()
        flags = rt.cudaGraphicsRegisterFlags
        flag = int(
            flags.cudaGraphicsRegisterFlagsReadOnly if read_only else flags.cudaGraphicsRegisterFlagsNone
        )
        if isinstance(obj, moderngl.Texture):
            resource = check(
                rt.cudaGraphicsGLRegisterImage(obj.glo, GL_TEXTURE_2D, flag), "cudaGraphicsGLRegisterImage"
            )
            if not int(resource):
                raise GLUnavailableError(_NULL_HANDLE)
        else:
            resource = check(rt.cudaGraphicsGLRegisterBuffer(obj.glo, flag), "cudaGraphicsGLRegisterBuffer")
        self._entries[id(obj)] = (weakref.ref(obj), resource)
        return resource

    def forget(self, objects: list) -> None:
        """``GLPipeline.release_hooks``: unregister ``objects`` before GL deletes them."""
        for obj in objects:
            entry = self._entries.get(id(obj))
            if entry is not None and entry[0]() is obj:
                del self._entries[id(obj)]
                self._unregister(entry[1])

    def clear(self) -> None:
        """Unregister everything (after a loss the errors are expected and ignored)."""
        entries, self._entries = self._entries, {}
        for _, resource in entries.values():
            self._unregister(resource)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _unregister(resource: Any) -> None:
        try:
            check(runtime().cudaGraphicsUnregisterResource(resource), "cudaGraphicsUnregisterResource")
        except Exception as exc:  # a lost context or a dying driver: nothing left to free
            log.debug("unregistering a CUDA graphics resource: %s", exc)


@contextlib.contextmanager
def _mapped(resources: list) -> Iterator[None]:
    """Map ``resources`` for CUDA (stream 0) with one call, and unmap them with one call afterwards,
    even on an error: one synchronisation with GL per batch instead of one per resource.

    cuda-python takes several resources as the address of an array of their handles (an ``int``);
    ``int(resource)`` is a handle's value."""
    if not resources:
        yield
        return
    rt = runtime()
    handles = (ctypes.c_void_p * len(resources))(*(int(resource) for resource in resources))
    address = ctypes.addressof(handles)
    check(rt.cudaGraphicsMapResources(len(resources), address, 0), "cudaGraphicsMapResources")
    try:
        yield
    finally:
        check(rt.cudaGraphicsUnmapResources(len(resources), address, 0), "cudaGraphicsUnmapResources")


class CudaBridge:
    """A processor's CUDA side: the device pool, the GL device's CUDA ordinal, the registrations of
    the current generation (and only that one)."""

    def __init__(self, device: int) -> None:
        self.pool = DevicePool(device)
        self._registrations: Registrations | None = None
        self._gl_device: tuple[int, int] | None = None  # (generation, CUDA ordinal)
        self._threads: set[int] = set()  # threads whose current CUDA device is set
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ per generation
    def registrations(self, generation: Generation) -> Registrations:
        current = self._registrations
        if current is not None and current.generation == generation.number:
            return current
        if current is not None:
            current.clear()  # an older generation: lost or released (its objects are gone)
        fresh = Registrations(generation.number)
        generation.pipeline.release_hooks.append(fresh.forget)
        self._registrations = fresh
        return fresh

    def gl_device(self, generation: Generation) -> int:
        """The CUDA ordinal of the generation's GL context (GL thread, context current).

        Owned contexts: ``EGL_CUDA_DEVICE_NV`` of the EGL device; otherwise ``cudaGLGetDevices``.

        Raises:
            NotCudaDeviceError: the context is not on a CUDA device.
        """
        if self._gl_device is not None and self._gl_device[0] == generation.number:
            return self._gl_device[1]
        ordinal = None
        device = getattr(
            getattr(getattr(generation.session, "egl_context", None), "display", None), "device", None
        )
        renderer = generation.session.info.renderer
        if device is not None:
            if "EGL_NV_device_cuda" not in device.extensions:
                raise NotCudaDeviceError(
                    f"the processor's EGL device {device.index} ({renderer}) is not a CUDA device "
                    "(no EGL_NV_device_cuda): CUDA interop needs the NVIDIA EGL device of the tensor's GPU"
                )
            ordinal = egl_cuda_device(device.handle)
        if ordinal is None:
            rt = runtime()
            try:
                count, devices = check(
                    rt.cudaGLGetDevices(1, rt.cudaGLDeviceList.cudaGLDeviceListAll), "cudaGLGetDevices"
                )
            except CudaError as exc:
                raise NotCudaDeviceError(
                    f"the processor's GL context ({renderer}) is not on a CUDA device: {exc}"
                ) from exc
            if not count:
                raise NotCudaDeviceError(f"the processor's GL context ({renderer}) is not on a CUDA device")
            ordinal = int(devices[0])
        self._gl_device = (generation.number, ordinal)
        return ordinal

    # ------------------------------------------------------------------------------ frames
    def run_frame(
        self, generation: Generation, frame: Frame, tensor: CudaTensor
    ) -> tuple[CudaArray | None, CudaArray | None]:
        """The CUDA frame on ``generation`` (GL thread, context current): see the module docstring."""
        try:
            return self._run_frame(generation, frame, tensor)
        except CudaError as exc:
            reason = generation.session.check()
            if reason:
                raise ContextLostError(
                    f"CUDA interop failed on a lost context: {exc}", reason=reason
                ) from exc
            raise

    def _run_frame(
        self, generation: Generation, frame: Frame, tensor: CudaTensor
    ) -> tuple[CudaArray | None, CudaArray | None]:
        rt = runtime()
        gl_device = self.gl_device(generation)
        if gl_device != tensor.device:
            raise InputError(
                "tensor",
                f"is on CUDA device {tensor.device}; the processor's GL context runs on CUDA device "
                f"{gl_device} (choose it with device_index / GPU_SEG_EGL_DEVICE, or move the tensor)",
            )
        self._set_device(gl_device)
        if tensor.stream not in (None, 1, 2):  # the producer's own stream: its writes must be done
            check(rt.cudaStreamSynchronize(tensor.stream), "cudaStreamSynchronize")
        pipeline = generation.pipeline
        registrations = self.registrations(generation)
        layout = TensorLayout.for_tensor(
            tensor.height, tensor.width, tensor.channels, pipeline.limits.max_texture_size
        )
        slot = pipeline._tensor_slot(layout)
        buffer = self._device_input(pipeline, slot, layout)
        resource = registrations.resource(buffer, read_only=False)
        copy_kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        with _mapped([resource]):
            pointer, _ = check(
                rt.cudaGraphicsResourceGetMappedPointer(resource), "cudaGraphicsResourceGetMappedPointer"
            )
            row = tensor.channels * 4
            check(
                rt.cudaMemcpy2DAsync(
                    int(pointer), layout.lanes * layout.groups * 4, tensor.pointer, row, row,
                    tensor.height * tensor.width, copy_kind, 0,
                ),
                "cudaMemcpy2DAsync",
            )  # fmt: skip
        source = GLSource("texels", buffer, tensor.height, tensor.width, tensor.channels)
        images = pipeline.submit_resident(frame, source, lend_textures=False)
        width, height = frame.width, frame.height
        confidence = category = None
        itemsize = frame.confidence_format.dtype.itemsize
        masks = len(images.confidence_buffers) or len(images.confidence)
        if masks:
            confidence = CudaArray(self.pool, (masks, height, width), frame.confidence_format.dtype)
        if images.category_buffer is not None or images.category_packed is not None:
            category = CudaArray(self.pool, (height, width), np.dtype(np.uint8))
        destinations = {
            "confidence": confidence.pointer if confidence else 0,
            "category": category.pointer if category else 0,
        }
        self._copy_out(
            registrations, texture_copies(images, itemsize), buffer_copies(images, itemsize), destinations
        )
        return confidence, category

    @staticmethod
    def _copy_out(
        registrations: Registrations,
        textures: list[TextureCopy],
        buffers: list[BufferCopy],
        destinations: dict[str, int],
    ) -> None:
        """Issue the frame's device-to-device copies into the result arrays (``destinations``: the
        device pointer of each), with the textures and buffers mapped (registered once each)."""
        rt = runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        texture_resources = [registrations.resource(copy.texture, read_only=True) for copy in textures]
        sources = {id(copy.buffer): copy.buffer for copy in buffers}  # the planes buffer serves every plane
        buffer_resources = {key: registrations.resource(b, read_only=True) for key, b in sources.items()}
        with _mapped(texture_resources + list(buffer_resources.values())):
            for resource, copy in zip(texture_resources, textures, strict=True):
                array = check(
                    rt.cudaGraphicsSubResourceGetMappedArray(resource, 0, 0),
                    "cudaGraphicsSubResourceGetMappedArray",
                )
                row = copy.row_bytes
                check(
                    rt.cudaMemcpy2DFromArrayAsync(
                        destinations[copy.destination] + copy.destination_offset, row, array, 0, 0, row,
                        copy.height, kind, 0,
                    ),
                    "cudaMemcpy2DFromArrayAsync",
                )  # fmt: skip
            pointers = {}
            for key, resource in buffer_resources.items():
                pointer, _ = check(
                    rt.cudaGraphicsResourceGetMappedPointer(resource), "cudaGraphicsResourceGetMappedPointer"
                )
                pointers[key] = int(pointer)
            for copy in buffers:
                check(
                    rt.cudaMemcpy2DAsync(
                        destinations[copy.destination] + copy.destination_offset, copy.row_bytes,
                        pointers[id(copy.buffer)] + copy.source_offset, copy.source_pitch, copy.row_bytes,
                        copy.height, kind, 0,
                    ),
                    "cudaMemcpy2DAsync",
                )  # fmt: skip

    @staticmethod
    def _device_input(pipeline: Any, slot: Any, layout: TensorLayout) -> moderngl.Buffer:
        """The slot's buffer of texels for CUDA inputs: zeros at creation (the copies never touch the
        padding lanes and the wrapped tail, so they stay zero)."""
        if slot.device_input is None:
            with pipeline._builder() as build:
                buffer = build.buffer(layout.texels * layout.lanes * 4)
                buffer.clear()
            slot.device_input = buffer
        return slot.device_input

    def _set_device(self, ordinal: int) -> None:
        thread = threading.get_ident()
        if thread not in self._threads:
            check(runtime().cudaSetDevice(ordinal), "cudaSetDevice")
            self._threads.add(thread)

    # ------------------------------------------------------------------------------ lifecycle
    def trim(self) -> None:
        """Free the pooled device blocks."""
        self.pool.trim()

    def close(self) -> None:
        """Unregister what is left (the generation's pipeline normally did it) and free the pool."""
        registrations, self._registrations = self._registrations, None
        if registrations is not None:
            registrations.clear()
        self.pool.close()
