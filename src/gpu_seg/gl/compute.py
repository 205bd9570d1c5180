"""Compute-shader forms of the heavy passes (``passes="compute"`` of :class:`~.pipeline.GLPipeline`).

Why: on GPUs that run graphics on a few of their units only (NVIDIA Hopper datacenter parts), every
fragment pass is slow, while compute shaders use the whole GPU. The passes here compute exactly
what the fragment passes compute (the same GLSL arithmetic, shared through ``resize_row.glsl`` and
``category_quad.glsl``: results are bit-identical), but write into shader storage buffers::

    resize_rows.comp      (W, TENSOR_H, groups) -> rows buffer, planar: channel c of tensor row y
                          at [(c * TENSOR_H + y) * W + x]; every group in one dispatch
    resize_columns.comp   rows -> planes buffer: float32 masks back to back (masks, H, W), plane
                          stride a multiple of 256 bytes; every mask in one dispatch (a few when the
                          planes exceed one storage block binding), channel subsets via a table
    category.comp         raw logits -> packed category rows (4 uint8 pixels per uint, rows of
                          quads(W) uints: the bytes of the fragment pass's R32UI texture)

and the frame's readout names buffer ranges (:class:`~.readback.BufferRead`): the direct readback
reads them with ``glGetBufferSubData``, the mapped one copies them into its ring slot on the GPU.

GPU-resident frames (:mod:`.resident`) copy the buffers into the exact-size textures they lend
(:meth:`ComputePasses.planes_into_textures`, :meth:`ComputePasses.category_into_texture`: compute
shaders with image stores, no fragment pass); the CUDA path copies the buffers themselves.

What stays on the fragment passes: the activation and softmax statistics (small, tensor
resolution), float16 and uint8 confidence masks (their packed encodings would need several pixels
per invocation), and an output whose buffers would exceed ``GL_MAX_SHADER_STORAGE_BLOCK_SIZE``
(:meth:`ComputePasses.fits_confidence`, :meth:`ComputePasses.fits_category`). The category
shortcut (llvmpipe) is a fragment-pass technique and is not used by the compute category pass.
"""

from __future__ import annotations

from collections.abc import Callable

import moderngl
import numpy as np

from ..frame import ConfidenceFormat
from ..types import Activation
from .plan import TensorLayout, align_corners_scale, quads, shared_columns
from .programs import ProgramCache, ProgramDefinition
from .readback import BufferRead
from .slots import ComputeConfidencePart, ObjectBuilder, OutputSlot, TensorSlot, write_resize_tables

__all__ = ["COMPUTE_GL_VERSION", "ComputePasses", "compute_available"]

#: ``moderngl.Context.version_code`` from which compute shaders and storage buffers exist (GL 4.3).
COMPUTE_GL_VERSION = 430
GL_SHADER_STORAGE_BARRIER_BIT = 0x2000
GL_BUFFER_UPDATE_BARRIER_BIT = 0x0200
#: What the caller of a resident frame may do with the textures filled by image stores: sample them,
#: read them (``glGetTexImage``, into a pack buffer), attach them, load them as images.
GL_TEXTURE_USE_BARRIER_BITS = 0x0008 | 0x0020 | 0x0080 | 0x0100 | 0x0400
GL_R32UI = 0x8236
#: Storage buffer binding offsets are aligned to this (the largest alignment GL allows).
_PLANE_ALIGN = 256
_ROWS_LOCAL, _COLUMNS_LOCAL, _CATEGORY_LOCAL = 64, 128, 64  # local_size_x of the three shaders
_IMAGE_LOCAL = (64, 4)  # local size of plane_image.comp.glsl and category_image.comp.glsl
_ACTIVATION_CODE = {Activation.NONE: 0, Activation.SIGMOID: 1, Activation.SOFTMAX: 2}


def compute_available(ctx: moderngl.Context) -> bool:
    """Whether the context has compute shaders and shader storage buffers (GL 4.3)."""
    return ctx.version_code >= COMPUTE_GL_VERSION


def _plane_stride(width: int, height: int) -> int:
    """Bytes from one float32 plane to the next in the planes buffer (whole 256-byte blocks)."""
    return -(-(width * height * 4) // _PLANE_ALIGN) * _PLANE_ALIGN


def _groups(count: int, local: int) -> int:
    return -(-count // local)


class ComputePasses:
    """The compute passes of one pipeline (same context generation, programs and object counting).

    ``max_storage_block``: the largest storage buffer binding in bytes
    (``GL_MAX_SHADER_STORAGE_BLOCK_SIZE``; tests lower it to exercise the split dispatches).
    """

    def __init__(
        self,
        ctx: moderngl.Context,
        programs: ProgramCache,
        builder: Callable[[], ObjectBuilder],
        max_storage_block: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.programs = programs
        self._builder = builder
        limit = int(ctx.info.get("GL_MAX_SHADER_STORAGE_BLOCK_SIZE", 1 << 27))
        self.max_storage_block = min(limit, max_storage_block or limit)

    # ----------------------------------------------------------------------------- fit
    @staticmethod
    def _rows_bytes(layout: TensorLayout, width: int) -> int:
        return width * layout.height * layout.channels * 4

    def fits_confidence(self, output: OutputSlot) -> bool:
        """Whether the slot's float32 masks can be computed here (buffers within one binding)."""
        if output.kind.format is not ConfidenceFormat.FLOAT32:
            return False
        width, height = output.capacity
        rows = self._rows_bytes(output.kind.layout, width)
        return max(rows, _plane_stride(width, height)) <= self.max_storage_block

    def fits_category(self, output: OutputSlot) -> bool:
        """Whether the slot's packed category mask fits one storage buffer binding."""
        width, height = output.capacity
        return quads(width) * 4 * height <= self.max_storage_block

    # ----------------------------------------------------------------------------- category
    def category(
        self, slot: TensorSlot, output: OutputSlot, activation: Activation, size: tuple[int, int]
    ) -> BufferRead:
        """The packed category mask of the frame into the slot's category buffer."""
        layout = slot.layout
        width, height = size
        if output.compute_category is None:
            capacity_width, capacity_height = output.capacity
            with self._builder() as build:
                buffer = build.storage(quads(capacity_width) * 4 * capacity_height)
            output.compute_category = buffer
        definition = ProgramDefinition.compute_of(
            "category.comp.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            COLUMNS=shared_columns(layout.width, width),
            **layout.params(),
        )
        program = self.programs.get(definition)
        _set(program, "u_tensor", 0)
        slot.texture.use(location=0)
        _set(program, "u_scale_x", align_corners_scale(layout.width, width))
        _set(program, "u_scale_y", align_corners_scale(layout.height, height))
        _set(program, "u_width", width)
        _set(program, "u_quads", quads(width))
        output.compute_category.bind_to_storage_buffer(0)
        program.run(_groups(quads(width), _CATEGORY_LOCAL), height, 1)
        self.ctx.memory_barrier(GL_BUFFER_UPDATE_BARRIER_BIT | GL_SHADER_STORAGE_BARRIER_BIT)
        return BufferRead(output.compute_category, 0, quads(width), height, "u4", 4)

    # ----------------------------------------------------------------------------- confidence
    def _build_confidence(self, output: OutputSlot) -> ComputeConfidencePart:
        kind, (width, height) = output.kind, output.capacity
        layout = kind.layout
        masks = layout.channels if kind.channels is None else len(kind.channels)
        with self._builder() as build:
            rows = build.storage(self._rows_bytes(layout, width))
            planes = build.storage(masks * _plane_stride(width, height))
            lut_x, lut_y = build.lut(width), build.lut(height)
            channels = None
            if kind.channels is not None:
                channels = build.storage(4 * masks)
                channels.write(np.asarray(kind.channels, np.int32).tobytes())
        output.compute_confidence = ComputeConfidencePart(rows, planes, lut_x, lut_y, channels)
        return output.compute_confidence

    def confidence(
        self, slot: TensorSlot, output: OutputSlot, source: moderngl.Texture, size: tuple[int, int]
    ) -> tuple[BufferRead, ...]:
        """Float32 confidence masks of the frame from the activated values ``source`` (tensor layout)."""
        layout = slot.layout
        width, height = size
        part = output.compute_confidence or self._build_confidence(output)
        write_resize_tables(part, layout, size)
        rows = self.programs.get(ProgramDefinition.compute_of("resize_rows.comp.glsl", **layout.params()))
        _set(rows, "u_source", 0)
        _set(rows, "u_taps", 1)
        _set(rows, "u_width", width)
        source.use(location=0)
        part.lut_x.use(location=1)
        part.rows.bind_to_storage_buffer(0)
        rows.run(_groups(width, _ROWS_LOCAL), layout.height, layout.groups)
        self.ctx.memory_barrier(GL_SHADER_STORAGE_BARRIER_BIT)

        channels = output.kind.channels
        masks = layout.channels if channels is None else len(channels)
        columns = self.programs.get(
            ProgramDefinition.compute_of(
                "resize_columns.comp.glsl", TENSOR_H=layout.height, ALL_CHANNELS=channels is None
            )
        )
        stride = _plane_stride(width, height)
        _set(columns, "u_taps", 0)
        _set(columns, "u_width", width)
        _set(columns, "u_plane_stride", stride // 4)
        part.lut_y.use(location=0)
        part.rows.bind_to_storage_buffer(0)
        if part.channels is not None:
            part.channels.bind_to_storage_buffer(2)
        per_dispatch = max(1, self.max_storage_block // stride)
        for first in range(0, masks, per_dispatch):
            count = min(per_dispatch, masks - first)
            _set(columns, "u_first_mask", first)
            part.planes.bind_to_storage_buffer(1, offset=first * stride, size=count * stride)
            columns.run(_groups(width, _COLUMNS_LOCAL), height, count)
        self.ctx.memory_barrier(GL_BUFFER_UPDATE_BARRIER_BIT | GL_SHADER_STORAGE_BARRIER_BIT)
        return tuple(BufferRead(part.planes, k * stride, width, height, "f4", 4) for k in range(masks))

    # ----------------------------------------------------------------------------- resident textures
    def planes_into_textures(
        self, planes: tuple[BufferRead, ...], textures: tuple[moderngl.Texture, ...]
    ) -> None:
        """Copy each float32 plane into its R32F texture of the plane's size (bits, no conversion)."""
        program = self.programs.get(ProgramDefinition.compute_of("plane_image.comp.glsl"))
        for plane, texture in zip(planes, textures, strict=True):
            _set(program, "u_width", plane.width)
            _set(program, "u_height", plane.height)
            plane.buffer.bind_to_storage_buffer(0, offset=plane.offset, size=plane.nbytes)
            texture.bind_to_image(0, read=False, write=True, format=GL_R32UI)  # R32F's bits as uints
            program.run(*_image_groups(plane.width, plane.height))
        self.ctx.memory_barrier(GL_TEXTURE_USE_BARRIER_BITS)

    def category_into_texture(self, category: BufferRead, texture: moderngl.Texture, width: int) -> None:
        """Unpack the packed category rows (``category``: rows of quads(width) uints) into the R8UI
        texture of ``(width, category.height)``."""
        program = self.programs.get(ProgramDefinition.compute_of("category_image.comp.glsl"))
        _set(program, "u_width", width)
        _set(program, "u_height", category.height)
        _set(program, "u_quads", category.width)
        category.buffer.bind_to_storage_buffer(0, offset=category.offset, size=category.nbytes)
        texture.bind_to_image(0, read=False, write=True)
        program.run(*_image_groups(width, category.height))
        self.ctx.memory_barrier(GL_TEXTURE_USE_BARRIER_BITS)


def _image_groups(width: int, height: int) -> tuple[int, int, int]:
    return _groups(width, _IMAGE_LOCAL[0]), _groups(height, _IMAGE_LOCAL[1]), 1


def _set(program: moderngl.ComputeShader, name: str, value: object) -> None:
    """Set uniform ``name`` if the compiled program kept it."""
    uniform = program.get(name, None)
    if uniform is not None:
        uniform.value = value
