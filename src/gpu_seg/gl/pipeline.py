"""The GL passes of one frame, and the pooled GL objects they use.

Data flow (see ``shaders/*.glsl`` for the maths, and :mod:`gpu_seg.reference` for the spec)::

    tensor (H, W, C) --upload--> tensor texture (TensorLayout, channel-interleaved, no transpose)
      category:   [cell_class.frag -> cell_uniform.frag -> category_fill.frag, then only unsure blocks:]
                  category.frag      raw logits -> align-corners lerp -> [sigmoid] -> argmax -> R32UI (4 px)
      confidence: [softmax_stats.frag] -> [activate.frag] at tensor resolution (skipped for "none")
                  -> resize_rows.frag -> resize_columns.frag   OpenCV INTER_LINEAR, separable, up to 8
                  masks per pass (MRT), stored as float32, float16 bits or uint8 (encode.glsl)
    -> read back into the caller's arrays (only the outputs asked for)

Every GL object is created by :class:`GLPipeline` for one context generation and kept in pools
keyed by size (tensor layout, output size), so steady-state frames allocate no GL objects. A new
generation gets a new pipeline; the old one is either released (healthy context) or abandoned
(lost context: no GL calls on dead handles).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import moderngl
import numpy as np

from ..errors import InputError
from ..frame import Frame
from ..sampling import align_corners_taps, identity_taps, resize_taps
from ..types import Activation
from .programs import ProgramCache, ProgramDefinition

__all__ = ["GLLimits", "GLPipeline", "TensorLayout"]

_VERTEX = "fullscreen.vert.glsl"
_ACTIVATION_CODE = {Activation.NONE: 0, Activation.SIGMOID: 1, Activation.SOFTMAX: 2}
#: Output sizes (with their textures) kept per pipeline before the least recently used is freed.
POOL_SIZE = 4


@dataclass(frozen=True)
class GLLimits:
    """What the driver allows, read once per context generation."""

    max_texture_size: int
    max_outputs_per_pass: int

    @classmethod
    def query(cls, ctx: moderngl.Context) -> GLLimits:
        info = ctx.info
        viewport = info.get("GL_MAX_VIEWPORT_DIMS", (1 << 30, 1 << 30))
        size = min(int(info["GL_MAX_TEXTURE_SIZE"]), int(min(viewport)))
        outputs = min(
            8, int(info.get("GL_MAX_DRAW_BUFFERS", 8)), int(info.get("GL_MAX_COLOR_ATTACHMENTS", 8))
        )
        return cls(max_texture_size=size, max_outputs_per_pass=outputs)


@dataclass(frozen=True)
class TensorLayout:
    """How an ``(H, W, C)`` tensor lies in its texture (see ``shaders/tensor_layout.glsl``).

    ``lanes`` channels per texel (1, 2 or 4), ``groups = ceil(C / lanes)`` texels per pixel,
    pixels in row-major order on lines of ``line`` texels. Unwrapped, ``line = W * groups`` and
    the texture rows are the tensor rows, so a tensor whose C is 1, 2 or a multiple of 4 is
    uploaded straight from the caller's memory.
    """

    width: int
    height: int
    channels: int
    lanes: int
    groups: int
    line: int
    lines: int
    wrapped: bool

    @classmethod
    def for_tensor(cls, height: int, width: int, channels: int, max_texture_size: int) -> TensorLayout:
        lanes = channels if channels <= 2 else 4
        groups = math.ceil(channels / lanes)
        texels = width * groups
        if height > max_texture_size:
            raise InputError("tensor", f"height {height} exceeds the GL texture limit of {max_texture_size}")
        if texels <= max_texture_size:
            return cls(width, height, channels, lanes, groups, texels, height, False)
        line = (max_texture_size // groups) * groups
        lines = math.ceil(width * height * groups / line) if line else max_texture_size + 1
        if line == 0 or lines > max_texture_size:
            raise InputError(
                "tensor",
                f"shape ({height}, {width}, {channels}) does not fit in a GL texture "
                f"(limit {max_texture_size} x {max_texture_size} texels of {lanes} channels)",
            )
        return cls(width, height, channels, lanes, groups, line, lines, True)

    @property
    def padded(self) -> bool:
        """Whether uploading needs a staging copy (zero lanes or a wrapped tail)."""
        return self.wrapped or self.lanes * self.groups != self.channels

    def params(self) -> dict[str, object]:
        return {
            "TENSOR_W": self.width,
            "TENSOR_H": self.height,
            "CHANNELS": self.channels,
            "LANES": self.lanes,
            "GROUPS": self.groups,
            "LINE": self.line,
            "WRAPPED": self.wrapped,
        }


def _lut(columns: list[np.ndarray]) -> np.ndarray:
    """Stack per-row/column values into an ``(n, 4)`` float32 lookup table (indices as floats)."""
    table = np.zeros((columns[0].shape[0], 4), np.float32)
    for i, column in enumerate(columns):
        table[:, i] = column
    return table


def _align_corners_scale(in_size: int, out_size: int) -> float:
    """The float32 scale of :func:`gpu_seg.sampling.align_corners_taps`, as the shader gets it."""
    return 0.0 if out_size == 1 else float(np.float32(in_size - 1) / np.float32(out_size - 1))


#: Confidence storage formats: dtype of the result, texture dtype, OUTPUT_FORMAT in encode.glsl.
CONFIDENCE_FORMATS = {
    "float32": (np.dtype(np.float32), "f4", 0),
    "float16": (np.dtype(np.float16), "u2", 1),
    "uint8": (np.dtype(np.uint8), "u1", 2),
}


@dataclass(frozen=True)
class _Pass:
    """One vertical (MRT) pass: which rows chunk it reads and which channels it writes."""

    chunk_first: int  # first group of the horizontal-pass chunk this pass reads
    local_first: int  # its first group within that chunk (contiguous mode)
    channels: tuple[int, ...]  # the channels written, one per attachment
    targets: tuple[int, ...]  # the confidence textures they go to
    select: bool  # channels given one by one (u_channel) rather than as consecutive groups


@dataclass(frozen=True)
class _ConfidencePlan:
    """How the separable resize is split into horizontal passes (chunks of groups) and MRT passes.

    The horizontal pass writes ``chunk_groups`` groups of tensor rows into one texture of
    ``height * chunk_groups`` rows; each vertical pass reads them and writes up to 8 channels.
    ``channels`` are the masks returned, in order; with a subset that fits one chunk only those
    are computed (``select``), otherwise every channel is computed and the subset read back.
    """

    chunk_groups: int
    passes: tuple[_Pass, ...]
    textures: int  # confidence textures needed
    sources: tuple[int, ...]  # the texture read back for each returned mask, in order

    @classmethod
    def build(
        cls, layout: TensorLayout, limits: GLLimits, channels: tuple[int, ...] | None
    ) -> _ConfidencePlan:
        per_pass = max(1, limits.max_outputs_per_pass // layout.lanes) * layout.lanes
        chunk = min(layout.groups, limits.max_texture_size // layout.height)
        pass_groups = per_pass // layout.lanes
        if chunk >= pass_groups:
            chunk -= chunk % pass_groups
        else:
            pass_groups, per_pass = chunk, chunk * layout.lanes
        if channels is not None and chunk == layout.groups:  # only the selected channels
            passes = tuple(
                _Pass(
                    0, 0, channels[i : i + per_pass], tuple(range(i, min(len(channels), i + per_pass))), True
                )
                for i in range(0, len(channels), per_pass)
            )
            return cls(chunk, passes, len(channels), tuple(range(len(channels))))
        passes = []  # every channel, texture c for channel c
        for chunk_first in range(0, layout.groups, chunk):
            chunk_end = min(layout.groups, chunk_first + chunk)
            for first in range(chunk_first, chunk_end, pass_groups):
                written = tuple(
                    range(
                        first * layout.lanes,
                        min(layout.channels, min(chunk_end, first + pass_groups) * layout.lanes),
                    )
                )
                passes.append(_Pass(chunk_first, first - chunk_first, written, written, False))
        sources = tuple(range(layout.channels)) if channels is None else channels
        return cls(chunk, tuple(passes), layout.channels, sources)


@dataclass
class _TensorSlot:
    """GL objects sized by the tensor layout."""

    layout: TensorLayout
    texture: moderngl.Texture
    staging: np.ndarray | None
    activated: moderngl.Texture | None = None
    activated_fbo: moderngl.Framebuffer | None = None
    stats: moderngl.Texture | None = None
    stats_fbo: moderngl.Framebuffer | None = None
    classes: moderngl.Texture | None = None
    classes_fbo: moderngl.Framebuffer | None = None
    cells: moderngl.Texture | None = None
    cells_fbo: moderngl.Framebuffer | None = None
    cells_host: np.ndarray | None = None

    def objects(self) -> list:
        objects = (
            self.cells_fbo, self.cells, self.classes_fbo, self.classes,
            self.stats_fbo, self.stats, self.activated_fbo, self.activated, self.texture,
        )  # fmt: skip
        return [o for o in objects if o]


@dataclass
class _OutputSlot:
    """GL objects sized by (tensor layout, output size, confidence format and channels)."""

    format: str = "float32"
    channels: tuple[int, ...] | None = None
    category: moderngl.Texture | None = None
    category_fbo: moderngl.Framebuffer | None = None
    category_staging: np.ndarray | None = None  # readback rows padded to 4 pixels
    blocks: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None  # _block_ranges
    rects: moderngl.Buffer | None = None
    rects_vao: moderngl.VertexArray | None = None
    confidence: list[moderngl.Texture] = field(default_factory=list)
    confidence_fbos: list[moderngl.Framebuffer] = field(default_factory=list)
    resize_luts: tuple[moderngl.Texture, moderngl.Texture] | None = None
    rows: moderngl.Texture | None = None
    rows_fbo: moderngl.Framebuffer | None = None
    plan: _ConfidencePlan | None = None

    def objects(self) -> list:
        objects: list = [self.rects_vao, self.rects, *self.confidence_fbos, *self.confidence]
        objects += [self.rows_fbo, self.rows, self.category_fbo, self.category, *(self.resize_luts or ())]
        return [o for o in objects if o]


class GLPipeline:
    """Runs the passes of a frame on one context generation.

    The caller makes the context current and checks its health; the pipeline only issues GL
    calls. ``release()`` frees everything on a live context; ``abandon()`` forgets everything
    without GL calls after a loss.

    Attributes:
        category_shortcut: draw input cells whose class is certain as flat rectangles and
            interpolate only the other cells (exact; see ``shaders/cell_class.frag.glsl``). Used
            when the full pass would be expensive (``SHORTCUT_MIN_WORK``).
    """

    #: Use the shortcut when output pixels x channel groups >= this many times the tensor's pixels.
    SHORTCUT_MIN_WORK = 16
    #: Above this fraction of unsure output pixels the plain full-screen pass is cheaper.
    SHORTCUT_MAX_UNSURE = 0.35
    #: Target size in output pixels (x, y) of the blocks of cells that are drawn as one rectangle.
    SHORTCUT_BLOCK = (16, 8)

    def __init__(
        self, ctx: moderngl.Context, programs: ProgramCache, max_texture_size: int | None = None
    ) -> None:
        self.ctx = ctx
        self.programs = programs
        self.limits = GLLimits.query(ctx)
        if max_texture_size is not None:  # tests force the wrapped tensor layout with a small limit
            self.limits = GLLimits(
                min(max_texture_size, self.limits.max_texture_size), self.limits.max_outputs_per_pass
            )
        # moderngl re-binds "the last bound framebuffer" when it creates one; if that one was
        # released meanwhile, the bind fails (GL_INVALID_OPERATION). Framebuffer 0 is always a
        # valid name, so frames end on it and nothing is released while one of ours is bound.
        self._idle = ctx.detect_framebuffer(0)
        self._vaos: dict[ProgramDefinition, moderngl.VertexArray] = {}
        self._tensor_slots: OrderedDict[TensorLayout, _TensorSlot] = OrderedDict()
        self._output_slots: OrderedDict[tuple, _OutputSlot] = OrderedDict()
        self.category_shortcut = True
        #: What the last category pass did: "full", or "cells" with the unsure pixel fraction.
        self.last_category_strategy: tuple[str, float] = ("full", 1.0)

    # ----------------------------------------------------------------------------- frame
    def process(
        self, frame: Frame, confidence_out: np.ndarray | None, category_out: np.ndarray | None
    ) -> None:
        """Compute the requested masks of a validated ``frame`` into the given arrays."""
        tensor, activation, width, height = frame.tensor, frame.activation, frame.width, frame.height
        confidence_format = frame.confidence_format.value
        channels = None if frame.all_channels else frame.confidence_channels
        layout = TensorLayout.for_tensor(*tensor.shape, self.limits.max_texture_size)
        slot = self._tensor_slot(layout)
        self._upload(slot, tensor)
        output = self._output_slot(layout, width, height, confidence_format, channels)
        if category_out is not None:
            self._draw_category(slot, output, activation, width, height)
        if confidence_out is not None:
            source = self._draw_activation(slot, activation)
            self._draw_confidence(slot, output, source, width, height)
        self._idle.use()
        if category_out is not None:
            self._read_category(output, category_out)
        if confidence_out is not None:
            for index, source in enumerate(output.plan.sources):
                output.confidence[source].read_into(confidence_out[index], alignment=1)

    # ----------------------------------------------------------------------------- passes
    def _program(self, definition: ProgramDefinition) -> tuple[moderngl.Program, moderngl.VertexArray]:
        program = self.programs.get(definition)
        vao = self._vaos.get(definition)
        if vao is None:
            vao = self._vaos[definition] = self.ctx.vertex_array(program, [])
        return program, vao

    @staticmethod
    def _bind(program: moderngl.Program, textures: dict, uniforms: dict | None = None) -> None:
        for unit, (name, texture) in enumerate(textures.items()):
            texture.use(location=unit)
            uniform = program.get(name, None)
            if uniform is not None:
                uniform.value = unit
        for name, value in (uniforms or {}).items():
            uniform = program.get(name, None)
            if uniform is None:
                continue
            if isinstance(value, tuple) and uniform.dimension == 1 and uniform.array_length == 1:
                value = value[0]  # an array of one element is set like a scalar
            uniform.value = value

    def _draw(
        self,
        definition: ProgramDefinition,
        fbo: moderngl.Framebuffer,
        textures: dict,
        keep_viewport: bool = False,
        **uniforms,
    ) -> None:
        """A full-screen pass (one triangle) into ``fbo`` (or into the viewport already set on it)."""
        program, vao = self._program(definition)
        self._bind(program, textures, uniforms)
        if not keep_viewport:
            fbo.use()
        vao.render(moderngl.TRIANGLES, vertices=3)

    def _upload(self, slot: _TensorSlot, tensor: np.ndarray) -> None:
        if slot.staging is None:
            slot.texture.write(tensor)
            return
        layout = slot.layout
        pixels = slot.staging[: layout.height * layout.width * layout.groups * layout.lanes]
        pixels.reshape(layout.height, layout.width, layout.groups * layout.lanes)[..., : layout.channels] = (
            tensor
        )
        slot.texture.write(slot.staging)

    # ----------------------------------------------------------------------------- category
    def _draw_category(
        self, slot: _TensorSlot, output: _OutputSlot, activation: Activation, width: int, height: int
    ) -> None:
        layout = slot.layout
        if output.category is None:  # 4 pixels per R32UI texel (see category.frag.glsl)
            output.category = self.ctx.texture((_quads(width), height), 1, dtype="u4")
            output.category_fbo = self.ctx.framebuffer(color_attachments=[output.category])
            if width % 4:
                output.category_staging = np.empty((height, _quads(width) * 4), np.uint8)
        uniforms = {
            "u_scale_x": _align_corners_scale(layout.width, width),
            "u_scale_y": _align_corners_scale(layout.height, height),
            "u_width": width,
        }
        full = ProgramDefinition.of(
            _VERTEX,
            "category.frag.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            COLUMNS=_shared_columns(layout.width, width),
            **layout.params(),
        )
        self.last_category_strategy = ("full", 1.0)
        if self._use_category_shortcut(layout, activation, width, height):
            cells = self._draw_cell_classes(slot, activation)
            rects, unsure = self._unsure_rectangles(slot, output, width, height)
            if unsure <= self.SHORTCUT_MAX_UNSURE:
                self.last_category_strategy = ("cells", unsure)
                fill = ProgramDefinition.of(
                    _VERTEX, "category_fill.frag.glsl", TENSOR_W=layout.width, TENSOR_H=layout.height
                )
                self._draw(fill, output.category_fbo, {"u_cells": cells}, **uniforms)
                if rects:
                    self._draw_rectangles(
                        full, output, rects, {"u_tensor": slot.texture}, uniforms, width, height
                    )
                return
        self._draw(full, output.category_fbo, {"u_tensor": slot.texture}, **uniforms)

    def _read_category(self, output: _OutputSlot, category_out: np.ndarray) -> None:
        if output.category_staging is None:
            output.category.read_into(category_out, alignment=1)
        else:
            output.category.read_into(output.category_staging, alignment=1)
            category_out[...] = output.category_staging[:, : category_out.shape[1]]

    def _use_category_shortcut(
        self, layout: TensorLayout, activation: Activation, width: int, height: int
    ) -> bool:
        """Whether to try the cell shortcut (see ``shaders/cell_class.frag.glsl``).

        Its fixed cost (two passes at tensor resolution and a small readback) pays off when the
        full pass is expensive: many output pixels per input cell and several channel groups.
        """
        if not self.category_shortcut:
            return False
        if layout.channels > 1 and activation is Activation.SIGMOID:
            return False  # sigmoid saturation breaks the strict order the proof needs
        return width * height * layout.groups >= self.SHORTCUT_MIN_WORK * layout.width * layout.height

    def _draw_cell_classes(self, slot: _TensorSlot, activation: Activation) -> moderngl.Texture:
        """Per input cell: the class all its output pixels get, or -1; also read back to the CPU."""
        layout = slot.layout
        if slot.classes is None:
            size = (layout.width, layout.height)
            slot.classes = self.ctx.texture(size, 1, dtype="i4")
            slot.classes_fbo = self.ctx.framebuffer(color_attachments=[slot.classes])
            slot.cells = self.ctx.texture(size, 1, dtype="i4")
            slot.cells_fbo = self.ctx.framebuffer(color_attachments=[slot.cells])
            slot.cells_host = np.empty((layout.height, layout.width), np.int32)
        classes = ProgramDefinition.of(
            _VERTEX,
            "cell_class.frag.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            **layout.params(),
        )
        self._draw(classes, slot.classes_fbo, {"u_tensor": slot.texture})
        cells = ProgramDefinition.of(
            _VERTEX, "cell_uniform.frag.glsl", TENSOR_W=layout.width, TENSOR_H=layout.height
        )
        self._draw(cells, slot.cells_fbo, {"u_classes": slot.classes})
        slot.cells.read_into(slot.cells_host)
        return slot.cells

    def _unsure_rectangles(
        self, slot: _TensorSlot, output: _OutputSlot, width: int, height: int
    ) -> tuple[int, float]:
        """Write rectangles covering the unsure cells' output pixels into the pooled vertex buffer.

        Cells are grouped into blocks of about ``SHORTCUT_BLOCK`` output pixels and horizontally
        adjacent unsure blocks are merged: llvmpipe shades 4x4-pixel blocks and pays per triangle,
        so a few wide rectangles cost far less than many cell-sized ones. Returns the number of
        rectangles and the fraction of output pixels they cover.
        """
        layout = slot.layout
        if output.blocks is None:
            output.blocks = _block_ranges(layout, width, height, self.SHORTCUT_BLOCK)
        (bx, xr), (by, yr) = output.blocks
        unsure = slot.cells_host < 0
        blocks = np.logical_or.reduceat(np.logical_or.reduceat(unsure, by, axis=0), bx, axis=1)
        row, start, end = _runs(blocks)
        if not len(row):
            return 0, 0.0
        x0, x1 = xr[start, 0] // 4, -(-xr[end - 1, 1] // 4)  # in 4-pixel texels of the target
        y0, y1 = yr[row, 0], yr[row, 1]
        covered = float(np.sum((x1 - x0) * (y1 - y0))) / (_quads(width) * height)
        if covered > self.SHORTCUT_MAX_UNSURE:
            return 0, covered
        x0, x1, y0, y1 = (a.astype(np.float32) for a in (x0, x1, y0, y1))
        corners = np.stack([x0, y0, x1, y0, x0, y1, x0, y1, x1, y0, x1, y1], axis=-1)  # two triangles each
        if output.rects is None:
            output.rects = self.ctx.buffer(reserve=blocks.size * 12 * 4)
        output.rects.write(np.ascontiguousarray(corners, np.float32))
        return len(row), covered

    def _draw_rectangles(
        self,
        definition: ProgramDefinition,
        output: _OutputSlot,
        count: int,
        textures: dict,
        uniforms: dict,
        width: int,
        height: int,
    ) -> None:
        """Run ``definition``'s fragment shader over the pooled rectangles (pixel coordinates)."""
        rect_definition = ProgramDefinition("rectangles.vert.glsl", definition.fragment, definition.params)
        program = self.programs.get(rect_definition)
        if output.rects_vao is None or output.rects_vao.program is not program:
            if output.rects_vao is not None:
                output.rects_vao.release()
            output.rects_vao = self.ctx.vertex_array(program, [(output.rects, "2f", "a_pixel")])
        self._bind(program, textures, {**uniforms, "u_target_size": (float(_quads(width)), float(height))})
        output.category_fbo.use()
        output.rects_vao.render(moderngl.TRIANGLES, vertices=6 * count)

    # ----------------------------------------------------------------------------- confidence
    def _draw_activation(self, slot: _TensorSlot, activation: Activation) -> moderngl.Texture:
        """Activated values at tensor resolution, in the tensor's layout (the tensor itself for none)."""
        if activation is Activation.NONE:
            return slot.texture
        layout = slot.layout
        if slot.activated is None:
            slot.activated = self._texture((layout.line, layout.lines), layout.lanes)
            slot.activated_fbo = self.ctx.framebuffer(color_attachments=[slot.activated])
        textures = {"u_tensor": slot.texture}
        if activation is Activation.SOFTMAX:
            if slot.stats is None:
                slot.stats = self._texture((layout.width, layout.height), 2)
                slot.stats_fbo = self.ctx.framebuffer(color_attachments=[slot.stats])
            stats = ProgramDefinition.of(_VERTEX, "softmax_stats.frag.glsl", **layout.params())
            self._draw(stats, slot.stats_fbo, {"u_tensor": slot.texture})
            textures["u_stats"] = slot.stats
        definition = ProgramDefinition.of(
            _VERTEX, "activate.frag.glsl", ACTIVATION=_ACTIVATION_CODE[activation], **layout.params()
        )
        self._draw(definition, slot.activated_fbo, textures)
        return slot.activated

    def _prepare_confidence(self, layout: TensorLayout, output: _OutputSlot, width: int, height: int) -> None:
        plan = output.plan = _ConfidencePlan.build(layout, self.limits, output.channels)
        texture_dtype = CONFIDENCE_FORMATS[output.format][1]
        output.confidence = [self._texture((width, height), 1, texture_dtype) for _ in range(plan.textures)]
        output.confidence_fbos = [
            self.ctx.framebuffer(color_attachments=[output.confidence[t] for t in step.targets])
            for step in plan.passes
        ]
        output.rows = self._texture((width, layout.height * plan.chunk_groups), layout.lanes)
        output.rows_fbo = self.ctx.framebuffer(color_attachments=[output.rows])
        if (layout.width, layout.height) == (width, height):
            tx, ty = identity_taps(width), identity_taps(height)
        else:
            tx, ty = resize_taps(layout.width, width, "x"), resize_taps(layout.height, height, "y")
        output.resize_luts = (
            self._lut_texture(_lut([tx.i0, tx.i1, tx.w0, tx.w1])),
            self._lut_texture(_lut([ty.i0, ty.i1, ty.w0, ty.w1])),
        )

    def _draw_confidence(
        self, slot: _TensorSlot, output: _OutputSlot, source: moderngl.Texture, width: int, height: int
    ) -> None:
        """Separable OpenCV resize: rows first (per chunk of groups), then columns, up to 8 masks a pass."""
        layout = slot.layout
        if not output.confidence:
            self._prepare_confidence(layout, output, width, height)
        plan = output.plan
        lut_x, lut_y = output.resize_luts
        output_format = CONFIDENCE_FORMATS[output.format][2]
        chunk_done = -1
        for index, step in enumerate(plan.passes):
            if step.chunk_first != chunk_done:
                chunk_done = step.chunk_first
                groups = min(plan.chunk_groups, layout.groups - step.chunk_first)
                rows = ProgramDefinition.of(
                    _VERTEX, "resize_rows.frag.glsl", CHUNK_FIRST=step.chunk_first, **layout.params()
                )
                output.rows_fbo.use()
                self.ctx.viewport = (0, 0, width, layout.height * groups)
                self._draw(rows, output.rows_fbo, {"u_source": source, "u_taps": lut_x}, keep_viewport=True)
            columns = ProgramDefinition.of(
                _VERTEX, "resize_columns.frag.glsl", TENSOR_H=layout.height, LANES=layout.lanes,
                FIRST_GROUP=step.local_first, PASS_OUTPUTS=len(step.channels), SELECT=step.select,
                OUTPUT_FORMAT=output_format,
            )  # fmt: skip
            uniforms = {"u_channel": step.channels} if step.select else {}
            self._draw(
                columns, output.confidence_fbos[index], {"u_rows": output.rows, "u_taps": lut_y}, **uniforms
            )

    # ----------------------------------------------------------------------------- pools
    def _texture(self, size: tuple[int, int], components: int, dtype: str = "f4") -> moderngl.Texture:
        texture = self.ctx.texture(size, components, dtype=dtype)
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        texture.repeat_x = texture.repeat_y = False
        return texture

    def _lut_texture(self, table: np.ndarray) -> moderngl.Texture:
        texture = self._texture((table.shape[0], 1), 4)
        texture.write(table)
        return texture

    def _tensor_slot(self, layout: TensorLayout) -> _TensorSlot:
        slot = self._tensor_slots.get(layout)
        if slot is not None:
            self._tensor_slots.move_to_end(layout)
            return slot
        texture = self._texture((layout.line, layout.lines), layout.lanes)
        staging = np.zeros(layout.line * layout.lines * layout.lanes, np.float32) if layout.padded else None
        slot = self._tensor_slots[layout] = _TensorSlot(layout, texture, staging)
        self._evict(self._tensor_slots)
        return slot

    def _output_slot(
        self, layout: TensorLayout, width: int, height: int, fmt: str, channels: tuple[int, ...] | None
    ) -> _OutputSlot:
        key = (layout, width, height, fmt, channels)
        slot = self._output_slots.get(key)
        if slot is not None:
            self._output_slots.move_to_end(key)
            return slot
        slot = self._output_slots[key] = _OutputSlot(format=fmt, channels=channels)
        self._evict(self._output_slots)
        return slot

    def _evict(self, pool: OrderedDict) -> None:
        self._idle.use()
        while len(pool) > POOL_SIZE:
            _, slot = pool.popitem(last=False)
            for obj in slot.objects():
                obj.release()

    def live_objects(self) -> int:
        """GL objects this pipeline holds (textures, framebuffers, buffers, vertex arrays, programs)."""
        count = len(self._vaos) + len(self.programs)
        for pool in (self._tensor_slots, self._output_slots):
            count += sum(len(slot.objects()) for slot in pool.values())
        return count

    def release(self) -> None:
        """Free every GL object (context alive and current)."""
        self._idle.use()
        for pool in (self._output_slots, self._tensor_slots):
            for slot in pool.values():
                for obj in slot.objects():
                    obj.release()
            pool.clear()
        for vao in self._vaos.values():
            vao.release()
        self._vaos.clear()
        self.programs.release()

    def abandon(self) -> None:
        """Forget every GL object without GL calls (the context is lost)."""
        self._output_slots.clear()
        self._tensor_slots.clear()
        self._vaos.clear()
        self.programs.abandon()


def _shared_columns(in_width: int, out_width: int) -> int:
    """Input columns 4 adjacent output pixels can touch (0: too many to share, fetch per pixel).

    The pixels span ``3 * scale`` input units, so their taps lie in ``floor(3 * scale) + 2``
    columns; one more covers float32 rounding of the positions.
    """
    span = math.floor(3 * _align_corners_scale(in_width, out_width)) + 3
    return span if span <= 5 else 0


def _quads(width: int) -> int:
    """Texels of a packed category row: 4 pixels each."""
    return -(-width // 4)


def _block_ranges(
    layout: TensorLayout, width: int, height: int, block_pixels: tuple[int, int]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Per axis: first cell of each block of cells, and the output pixels ``[start, end)`` of each block.

    Output pixel p belongs to the cell of its first align-corners tap; a block groups enough
    consecutive cells to span about ``block_pixels`` output pixels.
    """
    result = []
    for cells, out, target in (
        (layout.width, width, block_pixels[0]),
        (layout.height, height, block_pixels[1]),
    ):
        first_tap = align_corners_taps(cells, out).i0
        per_block = max(1, round(target * cells / out))
        starts = np.arange(0, cells, per_block)
        ends = np.minimum(starts + per_block, cells)
        ranges = np.stack(
            [np.searchsorted(first_tap, starts, "left"), np.searchsorted(first_tap, ends, "left")], -1
        )
        result.append((starts, ranges.astype(np.int64)))
    return result[0], result[1]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start and end (exclusive) of every horizontal run of True in a 2-D bool array."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends
