"""GPU-resident frames: GL-side tensors in, results left in textures (no host round trip).

:meth:`GLPipeline.submit_resident <gpu_seg.gl.pipeline.GLPipeline.submit_resident>` runs the same
passes as a host frame (same programs, so the same bits) with two differences:

* the tensor may come from a GL object of the pipeline's context (a :class:`GLSource`):

  - ``"hwc"``: a buffer of ``H * W * C`` float32 values in HWC order. When the tensor layout needs
    no padding (C of 1, 2 or a multiple of 4, unwrapped), the tensor texture is filled from the
    buffer as a pixel unpack source (a GPU copy). Otherwise the buffer is unpacked into an R32F
    texture of ``RAW_LINE`` values per row and ``shaders/tensor_relayout.glsl`` writes the
    padded layout from it (one small pass at tensor resolution: a compute shader with the compute
    passes, else a fragment pass);
  - ``"texels"``: a buffer already in the tensor texture's layout (``line * lines * lanes``
    float32, padding lanes included; the CUDA path writes it so): one pixel unpack copy;
  - ``"texture"``: a float texture of ``(W, H)`` texels whose ``C <= 4`` components are the
    channels, read by the relayout pass through a NEAREST sampler object;

* the output slot is always of exactly the frame's size (:meth:`OutputPool.exact
  <gpu_seg.gl.slots.OutputPool.exact>`), so the textures lent to the caller are whole textures;
  the packed category target (4 pixels per R32UI texel) is also unpacked into an R8UI texture of
  ``(W, H)`` by ``shaders/category_unpack.frag.glsl`` unless the caller does not need it (the CUDA
  path copies the packed rows, whose bytes are the mask's rows).

With the compute passes (``pipeline.passes == "compute"``, :mod:`.compute`; the category without
the shortcut) nothing is a fragment pass (those are slow on Hopper): the input re-layout, the
activation and the statistics are compute shaders, and the last passes store straight into the
lent textures (``resize_columns.comp.glsl`` into the R32F textures bound as r32ui images: the
bits move, NaN payloads included, or the R16UI/R8UI textures of float16/uint8 masks;
``category.comp.glsl`` into the R8UI texture): no buffer holds those results and nothing is
copied. The CUDA path (``lend_textures=False``) fills no texture to lend: float32 masks and the
category land in storage buffers, float16/uint8 masks in the slot's textures; it copies those.

Every object is pooled in the slots (:class:`~gpu_seg.gl.slots.RelayoutPart`,
``CategoryPart.unpacked``, :class:`~gpu_seg.gl.slots.ResidentPart`), so steady-state resident
frames allocate no GL objects either.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import moderngl

from ..errors import ContextLostError, InputError
from ..frame import ConfidenceFormat, Frame
from . import rawgl
from .plan import TEXTURE_FORMATS, TensorLayout
from .programs import ProgramDefinition
from .readback import BufferRead
from .slots import OutputKind, OutputSlot, RelayoutPart, ResidentPart, Target, TensorSlot

if TYPE_CHECKING:
    from .pipeline import GLPipeline

__all__ = ["GLSource", "ResidentImages", "SourceLostError", "raw_line", "run_resident"]

_VERTEX = "fullscreen.vert.glsl"
SourceKind = Literal["hwc", "texels", "texture"]


@dataclass(frozen=True)
class GLSource:
    """A GL-side tensor of the pipeline's context, already validated (see the module docstring)."""

    kind: SourceKind
    obj: moderngl.Buffer | moderngl.Texture
    height: int
    width: int
    channels: int


@dataclass(frozen=True)
class ResidentImages:
    """The results of one resident frame: textures of exactly ``(width, height)`` texels except the
    packed category (``(ceil(width / 4), height)`` R32UI: byte i of texel x = pixel 4x + i), and,
    for outputs that the compute passes computed, the storage buffer ranges holding them.

    ``confidence``: one single-component texture per mask (R32F, R16UI holding float16 bits, or
    R8UI, after the confidence format); empty when not requested, or when float32 masks were
    computed by the compute passes without ``lend_textures`` (they are in ``confidence_buffers``
    then). ``category``: R8UI class indices (None when not requested or without
    ``lend_textures``). ``category_packed``: the fragment pass's packed texture (None for the
    compute pass). ``confidence_buffers``/``category_buffer``: the compute passes' results
    (float32 planes; packed category rows of ``quads(width)`` uints) when they were not stored
    straight into lent textures (``lend_textures=False``), else empty/None. ``passes``: which form
    ran: ``"compute"``, ``"fragment"``, ``"mixed"`` (e.g. the category on the fragment pass of
    llvmpipe's shortcut, the masks on the compute passes) or ``"none"``.
    """

    confidence: tuple[moderngl.Texture, ...]
    category: moderngl.Texture | None
    category_packed: moderngl.Texture | None
    width: int
    height: int
    confidence_buffers: tuple[BufferRead, ...] = ()
    category_buffer: BufferRead | None = None
    passes: str = "fragment"


@functools.lru_cache(maxsize=64)
def raw_line(height: int, width: int, channels: int, max_texture_size: int) -> int:
    """Values per row of the R32F texture an HWC buffer is unpacked into.

    ``W * C`` (one tensor row per texture row) when it fits the texture limit; else the largest
    divisor of ``H * W * C`` that fits and leaves at most ``max_texture_size`` rows (the buffer
    must cover the texture's rectangle exactly).

    Raises:
        InputError: no such divisor exists (the tensor is too large for a GL-side input).
    """
    if width * channels <= max_texture_size:
        return width * channels
    total = height * width * channels
    for line in range(max_texture_size, 0, -1):
        if total % line == 0:
            if total // line > max_texture_size:
                break
            return line
    raise InputError(
        "tensor",
        f"a GL-side tensor of shape ({height}, {width}, {channels}) cannot be unpacked within the GL "
        f"texture limit of {max_texture_size}; pass it as a numpy array",
    )


def run_resident(
    pipeline: GLPipeline, frame: Frame, source: GLSource | None, lend_textures: bool
) -> ResidentImages:
    """Upload (or take the GL source), run the frame's passes, leave the results in textures (and,
    for compute passes, in their storage buffers; see the module docstring)."""
    layout = TensorLayout.for_tensor(*frame.tensor.shape, pipeline.limits.max_texture_size)
    pipeline._apply_strategies()
    pipeline._check_passes(pipeline.passes)
    slot = pipeline._tensor_slot(layout)
    if source is None:
        pipeline._upload.upload(slot, frame.tensor)
    else:
        _take_source(pipeline, slot, source)
    confidence = frame.confidence_channels is not None
    fmt = frame.confidence_format if confidence else ConfidenceFormat.FLOAT32
    channels = None if not confidence or frame.all_channels else frame.confidence_channels
    output = _exact_output_slot(pipeline, OutputKind(layout, fmt, channels), frame.width, frame.height)
    size = (frame.width, frame.height)
    compute = pipeline.passes == "compute"
    images = _Images()
    if frame.category:
        if compute and not pipeline.category_shortcut and pipeline._compute.fits_category(output):
            images.computed = True
            texture = None
            if lend_textures:
                part = _resident_part(pipeline, output)
                texture = images.category = part.category or _build_category(pipeline, output)
            images.category_buffer = pipeline._compute.category(slot, output, frame.activation, size, texture)
        else:
            images.category_packed = pipeline._draw_category(slot, output, frame.activation, size).texture
            if lend_textures:
                images.category = _draw_unpacked(pipeline, output, size)
    if confidence:
        activated = pipeline._draw_activation(slot, frame.activation)
        if compute and pipeline._compute.fits_confidence(output):
            images.computed = True
            textures = None
            if lend_textures:
                textures = _resident_part(pipeline, output).confidence or _build_planes(pipeline, output)
                images.confidence = textures
            reads = pipeline._compute.confidence(slot, output, activated, size, textures)
            if reads and isinstance(reads[0], BufferRead):
                images.confidence_buffers = reads  # float32, without lent textures: the planes buffer
            elif reads:
                images.confidence = tuple(read.texture for read in reads)  # float16/uint8 textures
        else:
            reads = pipeline._draw_confidence(slot, output, activated, size)
            images.confidence = tuple(read.texture for read in reads)
            images.fragment_confidence = True
    pipeline._idle.use()
    return images.done(frame.width, frame.height)


@dataclass
class _Images:
    """What :func:`run_resident` built so far (see :class:`ResidentImages`)."""

    confidence: tuple[moderngl.Texture, ...] = ()
    category: moderngl.Texture | None = None
    category_packed: moderngl.Texture | None = None
    confidence_buffers: tuple[BufferRead, ...] = ()
    category_buffer: BufferRead | None = None
    computed: bool = False  # some output came from the compute passes
    fragment_confidence: bool = False  # the confidence masks came from the fragment passes

    def done(self, width: int, height: int) -> ResidentImages:
        forms = set()
        if self.computed:
            forms.add("compute")
        if self.category_packed is not None or self.fragment_confidence:
            forms.add("fragment")
        passes = "mixed" if len(forms) > 1 else next(iter(forms), "none")
        return ResidentImages(
            self.confidence, self.category, self.category_packed, width, height,
            self.confidence_buffers, self.category_buffer, passes,
        )  # fmt: skip


def _resident_part(pipeline: GLPipeline, output: OutputSlot) -> ResidentPart:
    if output.resident is None:
        output.resident = ResidentPart()
    return output.resident


def _build_planes(pipeline: GLPipeline, output: OutputSlot) -> tuple[moderngl.Texture, ...]:
    """The slot's mask textures (R32F, R16UI or R8UI after the format), one per mask, of the
    slot's (exact) size."""
    kind = output.kind
    masks = kind.layout.channels if kind.channels is None else len(kind.channels)
    dtype = TEXTURE_FORMATS[kind.format].texture_dtype
    with pipeline._builder() as build:
        textures = tuple(build.texture(output.capacity, 1, dtype) for _ in range(masks))
    _resident_part(pipeline, output).confidence = textures
    return textures


def _build_category(pipeline: GLPipeline, output: OutputSlot) -> moderngl.Texture:
    """The slot's R8UI category texture of the slot's (exact) size."""
    with pipeline._builder() as build:
        texture = build.texture(output.capacity, 1, "u1")
    _resident_part(pipeline, output).category = texture
    return texture


def _exact_output_slot(pipeline: GLPipeline, kind: OutputKind, width: int, height: int) -> OutputSlot:
    slot = pipeline._outputs.exact(kind, width, height)
    pipeline._release(pipeline._outputs.release_idle())
    if slot is None:
        slot = OutputSlot(kind, (width, height))
        pipeline._release(pipeline._outputs.add(slot))
    pipeline._outputs.lent(slot)
    return slot


def _relayout_part(pipeline: GLPipeline, slot: TensorSlot) -> RelayoutPart:
    if slot.relayout is None:
        with pipeline._builder() as build:
            framebuffer = build.framebuffer([slot.texture])
        slot.relayout = RelayoutPart(framebuffer)
    return slot.relayout


def _take_source(pipeline: GLPipeline, slot: TensorSlot, source: GLSource) -> None:
    """Fill the tensor texture from a GL-side tensor, on the GPU."""
    layout = slot.layout
    if source.kind == "texels" or (source.kind == "hwc" and not layout.padded):
        slot.texture.write(source.obj)  # GL_PIXEL_UNPACK_BUFFER: a copy on the GPU
        return
    part = _relayout_part(pipeline, slot)
    sampler = None
    if source.kind == "hwc":
        line = raw_line(layout.height, layout.width, layout.channels, pipeline.limits.max_texture_size)
        rows = layout.height * layout.width * layout.channels // line
        if part.raw is None or part.raw.size != (line, rows):
            if part.raw is not None:
                pipeline._release([part.raw])
                part.raw = None
            with pipeline._builder() as build:
                raw = build.texture((line, rows), 1)
            part.raw = raw
        part.raw.write(source.obj)
        textures = {"u_source": part.raw}
    else:
        line = 1
        if part.sampler is None:
            with pipeline._builder() as build:
                built = build.sampler()
            part.sampler = built
        sampler = part.sampler
        textures = {"u_source": source.obj}
    if sampler is not None:
        sampler.use(location=0)  # u_source is bound to unit 0
    try:
        target = Target(slot.texture, part.framebuffer)
        params = {"SOURCE": int(source.kind == "texture"), "RAW_LINE": line, **layout.params()}
        pipeline._fill_texels("tensor_relayout", target, textures, **params)
    finally:
        if sampler is not None:
            sampler.clear(location=0)


def _draw_unpacked(pipeline: GLPipeline, output: OutputSlot, size: tuple[int, int]) -> moderngl.Texture:
    """The packed category target as one R8UI texel per pixel (``CategoryPart.unpacked``)."""
    part = output.category
    assert part is not None
    if part.unpacked is None:
        with pipeline._builder() as build:
            unpacked = build.target(output.capacity, 1, "u1")
        part.unpacked = unpacked
    definition = ProgramDefinition.of(_VERTEX, "category_unpack.frag.glsl")
    pipeline._draw(definition, part.unpacked.framebuffer, {"u_packed": part.target.texture}, size)
    return part.unpacked.texture


class SourceLostError(ContextLostError):
    """A GL-side input belongs to a context generation that is gone (lost, or released by
    ``trim(release_context=True)``/``close()``): upload the tensor again in the current context."""


_IS_NAME = ctypes.CFUNCTYPE(ctypes.c_ubyte, ctypes.c_uint)


def names_an_object(source: GLSource) -> bool:
    """Whether ``source``'s GL name is a live buffer/texture in the current context (``glIsBuffer``/
    ``glIsTexture``); True where the entry point cannot be found (nothing to check with)."""
    address = rawgl.resolve("glIsTexture" if source.kind == "texture" else "glIsBuffer")
    return not address or bool(_IS_NAME(address)(source.obj.glo))
