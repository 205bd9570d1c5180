"""Compute-shader forms of the heavy passes (``passes="compute"`` of :class:`~.pipeline.GLPipeline`).

Why: on GPUs that run graphics on a few of their units only (NVIDIA Hopper datacenter parts), every
fragment pass is slow, while compute shaders use the whole GPU. The passes here compute exactly
what the fragment passes compute (the same GLSL arithmetic, shared through ``resize_row.glsl`` and
``category_quad.glsl``: results are bit-identical), but write into shader storage buffers (or,
by image stores, into textures)::

    resize_rows.comp      (W, TENSOR_H, groups) -> rows buffer, planar: channel c of tensor row y
                          at [(c * TENSOR_H + y) * W + x]; every group in one dispatch
    resize_columns.comp   rows -> float32 masks into a planes buffer, back to back (masks, H, W),
                          plane stride a multiple of 256 bytes; every mask in one dispatch (a few
                          when the planes exceed one storage block binding), channel subsets via a
                          table. Float16 and uint8 masks (``encode.glsl``) go into R16UI/R8UI
                          textures instead (image stores, up to 8 masks per dispatch)
    category.comp         raw logits -> packed category rows (4 uint8 pixels per uint, rows of
                          quads(W) uints: the bytes of the fragment pass's R32UI texture)

and the frame's readout names those buffer ranges (:class:`~.readback.BufferRead`, copied by the
mapped readback into its ring slot on the GPU) or textures (:class:`~.readback.ImageRead`).

GPU-resident frames (:mod:`.resident`) that lend textures have ``resize_columns.comp`` and
``category.comp`` store straight into the exact-size textures they lend (image stores: up to 8
masks per dispatch, no planes or category buffer, no copy); the CUDA path copies the buffers.

The passes at tensor resolution (softmax statistics, activation, and the resident input's
re-layout) have compute forms too (:meth:`ComputePasses.fill_texels`): the function of one texel
that the fragment form writes, stored into the same texture as an image (``texel_store.glsl``).

What stays on the fragment passes: an output whose buffers would exceed
``GL_MAX_SHADER_STORAGE_BLOCK_SIZE`` (:meth:`ComputePasses.fits_confidence`,
:meth:`ComputePasses.fits_category`). The category shortcut (llvmpipe) is a fragment-pass
technique and is not used by the compute category pass.
"""

from __future__ import annotations

from collections.abc import Callable

import moderngl
import numpy as np

from ..frame import ConfidenceFormat
from ..types import Activation
from . import rawgl
from .plan import TEXTURE_FORMATS, TensorLayout, align_corners_scale, quads, shared_columns
from .programs import ProgramCache, ProgramDefinition, bind_inputs, set_uniform
from .readback import BufferRead, ImageRead, Read
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
_TEXEL_LOCAL = (16, 8)  # local size of texel_store.glsl
#: Masks that resize_columns.comp.glsl stores into images in one dispatch at most (GL 4.3's
#: minimum of GL_MAX_IMAGE_UNITS and GL_MAX_COMPUTE_IMAGE_UNIFORMS); fewer where the context's
#: limits say so (see :func:`images_per_dispatch`).
_IMAGES_PER_DISPATCH = 8
GL_MAX_IMAGE_UNITS = 0x8F38
GL_MAX_COMBINED_SHADER_OUTPUT_RESOURCES = 0x8F39
GL_MAX_COMPUTE_IMAGE_UNIFORMS = 0x91BD
#: Storage blocks of resize_columns.comp.glsl besides its images (rows; the channel table).
_COLUMNS_STORAGE_BLOCKS = 2


def images_per_dispatch() -> int:
    """Images one resize_columns.comp dispatch may store into on the current context: at most 8,
    within GL_MAX_IMAGE_UNITS and GL_MAX_COMPUTE_IMAGE_UNIFORMS, and within
    GL_MAX_COMBINED_SHADER_OUTPUT_RESOURCES less the shader's storage blocks (images and storage
    blocks share that limit, whose GL 4.3 minimum is only 8)."""
    limits = [_IMAGES_PER_DISPATCH]
    for pname, reserved in (
        (GL_MAX_IMAGE_UNITS, 0),
        (GL_MAX_COMPUTE_IMAGE_UNIFORMS, 0),
        (GL_MAX_COMBINED_SHADER_OUTPUT_RESOURCES, _COLUMNS_STORAGE_BLOCKS),
    ):
        value = rawgl.get_integer(pname)
        if value is not None:
            limits.append(value - reserved)
    return max(1, min(limits))


#: Image format of a float32 texture of 1, 2 or 4 components (texel_store.glsl's IMAGE_FORMAT).
_FLOAT_IMAGE_FORMATS = {1: "r32f", 2: "rg32f", 4: "rgba32f"}
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
    (``GL_MAX_SHADER_STORAGE_BLOCK_SIZE``; tests lower it to exercise the split dispatches);
    ``max_images``: the most masks one dispatch stores into images (:func:`images_per_dispatch`,
    lowered by tests likewise).
    """

    def __init__(
        self,
        ctx: moderngl.Context,
        programs: ProgramCache,
        builder: Callable[[], ObjectBuilder],
        max_storage_block: int | None = None,
        max_images: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.programs = programs
        # max_images: tests lower it to exercise more dispatches of image stores
        self.max_images = 0
        if compute_available(ctx):  # the queries are GL 4.3 enums (an error before)
            self.max_images = min(images_per_dispatch(), max_images or _IMAGES_PER_DISPATCH)
        self._builder = builder
        limit = int(ctx.info.get("GL_MAX_SHADER_STORAGE_BLOCK_SIZE", 1 << 27))
        self.max_storage_block = min(limit, max_storage_block or limit)

    # ----------------------------------------------------------------------------- fit
    @staticmethod
    def _rows_bytes(layout: TensorLayout, width: int) -> int:
        return width * layout.height * layout.channels * 4

    def fits_confidence(self, output: OutputSlot) -> bool:
        """Whether the slot's masks can be computed here: the rows buffer (and, for float32 masks,
        one plane) within one storage block binding."""
        width, height = output.capacity
        needed = self._rows_bytes(output.kind.layout, width)
        if output.kind.format is ConfidenceFormat.FLOAT32:
            needed = max(needed, _plane_stride(width, height))
        return needed <= self.max_storage_block

    def fits_category(self, output: OutputSlot) -> bool:
        """Whether the slot's packed category mask fits one storage buffer binding."""
        width, height = output.capacity
        return quads(width) * 4 * height <= self.max_storage_block

    # ----------------------------------------------------------------------------- category
    def category(
        self,
        slot: TensorSlot,
        output: OutputSlot,
        activation: Activation,
        size: tuple[int, int],
        texture: moderngl.Texture | None = None,
    ) -> BufferRead | None:
        """The packed category mask of the frame into the slot's category buffer (returned as a
        buffer range), or, given ``texture`` (R8UI of the frame's size: the resident frame's lent
        texture), one texel per pixel straight into it (returns None)."""
        layout = slot.layout
        width, height = size
        definition = ProgramDefinition.compute_of(
            "category.comp.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            COLUMNS=shared_columns(layout.width, width),
            IMAGE=texture is not None,
            **layout.params(),
        )
        program = self.programs.get(definition)
        _set(program, "u_tensor", 0)
        slot.texture.use(location=0)
        _set(program, "u_scale_x", align_corners_scale(layout.width, width))
        _set(program, "u_scale_y", align_corners_scale(layout.height, height))
        _set(program, "u_width", width)
        _set(program, "u_quads", quads(width))
        if texture is not None:
            texture.bind_to_image(0, read=False, write=True)
            program.run(_groups(quads(width), _CATEGORY_LOCAL), height, 1)
            self.ctx.memory_barrier(GL_TEXTURE_USE_BARRIER_BITS)
            return None
        if output.compute_category is None:
            capacity_width, capacity_height = output.capacity
            with self._builder() as build:
                buffer = build.storage(quads(capacity_width) * 4 * capacity_height)
            output.compute_category = buffer
        output.compute_category.bind_to_storage_buffer(0)
        program.run(_groups(quads(width), _CATEGORY_LOCAL), height, 1)
        self.ctx.memory_barrier(GL_BUFFER_UPDATE_BARRIER_BIT | GL_SHADER_STORAGE_BARRIER_BIT)
        return BufferRead(output.compute_category, 0, quads(width), height, "u4", 4)

    # ----------------------------------------------------------------------------- confidence
    def _build_confidence(self, output: OutputSlot) -> ComputeConfidencePart:
        kind, (width, height) = output.kind, output.capacity
        layout = kind.layout
        with self._builder() as build:
            rows = build.storage(self._rows_bytes(layout, width))
            lut_x, lut_y = build.lut(width), build.lut(height)
            channels = None
            if kind.channels is not None:
                channels = build.storage(4 * len(kind.channels))
                channels.write(np.asarray(kind.channels, np.int32).tobytes())
        output.compute_confidence = ComputeConfidencePart(rows, lut_x, lut_y, channels)
        return output.compute_confidence

    def _planes(self, output: OutputSlot, part: ComputeConfidencePart) -> moderngl.Buffer:
        if part.planes is None:
            kind, (width, height) = output.kind, output.capacity
            masks = kind.layout.channels if kind.channels is None else len(kind.channels)
            with self._builder() as build:
                part.planes = build.storage(masks * _plane_stride(width, height))
        return part.planes

    def _mask_textures(self, output: OutputSlot, part: ComputeConfidencePart) -> ComputeConfidencePart:
        """The slot's float16/uint8 mask textures (R16UI/R8UI) and their framebuffers."""
        if not part.textures:
            kind = output.kind
            masks = kind.layout.channels if kind.channels is None else len(kind.channels)
            dtype = TEXTURE_FORMATS[kind.format].texture_dtype
            with self._builder() as build:
                textures = tuple(build.texture(output.capacity, 1, dtype) for _ in range(masks))
                framebuffers = tuple(build.framebuffer([texture]) for texture in textures)
            part.textures, part.framebuffers = textures, framebuffers
        return part

    def confidence(
        self,
        slot: TensorSlot,
        output: OutputSlot,
        source: moderngl.Texture,
        size: tuple[int, int],
        textures: tuple[moderngl.Texture, ...] | None = None,
    ) -> tuple[Read, ...]:
        """Confidence masks of the frame from the activated values ``source`` (tensor layout).

        Float32 masks go to the slot's planes buffer (returned as buffer ranges); float16/uint8
        masks to the slot's R16UI/R8UI textures (returned as image reads). Given ``textures`` (one
        texture of the frame's size and the masks' format per mask: a resident frame's lent
        textures) they go straight into those instead, and nothing is returned.
        """
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

        kind = output.kind
        masks = layout.channels if kind.channels is None else len(kind.channels)
        packed = kind.format is not ConfidenceFormat.FLOAT32
        reads: tuple[Read, ...] = ()
        if textures is None and packed:
            self._mask_textures(output, part)
            textures = part.textures
            exact = output.exact(width, height)
            dtype = TEXTURE_FORMATS[kind.format].texture_dtype
            reads = tuple(
                ImageRead(texture, None if exact else framebuffer, 0, width, height, dtype, int(dtype[1]))
                for texture, framebuffer in zip(part.textures, part.framebuffers, strict=True)
            )
        images = 0 if textures is None else min(masks, self.max_images)
        columns = self.programs.get(
            ProgramDefinition.compute_of(
                "resize_columns.comp.glsl",
                TENSOR_H=layout.height,
                ALL_CHANNELS=kind.channels is None,
                IMAGES=images,
                OUTPUT_FORMAT=TEXTURE_FORMATS[kind.format].output_format,
            )
        )
        _set(columns, "u_taps", 0)
        _set(columns, "u_width", width)
        part.lut_y.use(location=0)
        part.rows.bind_to_storage_buffer(0)
        if part.channels is not None:
            part.channels.bind_to_storage_buffer(2)
        if textures is not None:
            if len(textures) != masks:
                raise ValueError(f"{len(textures)} textures for {masks} masks")
            reinterpret = None if packed else GL_R32UI  # float32 bits through an r32ui image
            for first in range(0, masks, images):
                count = min(images, masks - first)
                _set(columns, "u_first_mask", first)
                for unit, texture in enumerate(textures[first : first + count]):
                    texture.bind_to_image(unit, read=False, write=True, format=reinterpret or 0)
                columns.run(_groups(width, _COLUMNS_LOCAL), height, count)
            self.ctx.memory_barrier(GL_TEXTURE_USE_BARRIER_BITS)
            return reads
        planes = self._planes(output, part)
        stride = _plane_stride(width, height)
        _set(columns, "u_plane_stride", stride // 4)
        per_dispatch = max(1, self.max_storage_block // stride)
        for first in range(0, masks, per_dispatch):
            count = min(per_dispatch, masks - first)
            _set(columns, "u_first_mask", first)
            planes.bind_to_storage_buffer(1, offset=first * stride, size=count * stride)
            columns.run(_groups(width, _COLUMNS_LOCAL), height, count)
        self.ctx.memory_barrier(GL_BUFFER_UPDATE_BARRIER_BIT | GL_SHADER_STORAGE_BARRIER_BIT)
        return tuple(BufferRead(planes, k * stride, width, height, "f4", 4) for k in range(masks))

    # ----------------------------------------------------------------------------- texel passes
    def fill_texels(
        self, shader: str, target: moderngl.Texture, textures: dict, params: dict[str, object]
    ) -> None:
        """The compute form of a one-value-per-texel pass (``shaders/<shader>.comp.glsl``: the
        pass's ``texel_value`` through ``texel_store.glsl``) over every texel of the float32
        ``target``, bound as an image of its own format; ``textures`` are sampled (units 0, 1...)."""
        definition = ProgramDefinition.compute_of(
            f"{shader}.comp.glsl", IMAGE_FORMAT=_FLOAT_IMAGE_FORMATS[target.components], **params
        )
        program = self.programs.get(definition)
        bind_inputs(program, textures, {"u_size": target.size})
        target.bind_to_image(0, read=False, write=True)
        program.run(_groups(target.width, _TEXEL_LOCAL[0]), _groups(target.height, _TEXEL_LOCAL[1]), 1)
        self.ctx.memory_barrier(GL_TEXTURE_USE_BARRIER_BITS)


def _set(program: moderngl.ComputeShader, name: str, value: object) -> None:
    """Set uniform ``name`` if the compiled program kept it and it changed (:func:`set_uniform`)."""
    set_uniform(program, name, value)
