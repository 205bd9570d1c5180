"""The GL passes of one frame, and the pooled GL objects they use.

Data flow (see ``shaders/*.glsl`` for the maths, and :mod:`gpu_seg.reference` for the spec)::

    tensor (H, W, C) --upload--> tensor texture (TensorLayout, channel-interleaved, no transpose)
      category:   category.frag      raw logits -> align-corners lerp -> [sigmoid] -> argmax -> R8UI
      confidence: [softmax_stats.frag] -> [activate.frag] at tensor resolution (skipped for "none")
                  -> confidence.frag   OpenCV INTER_LINEAR, up to 8 R32F masks per pass (MRT)
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

    def objects(self) -> list:
        return [
            o for o in (self.stats_fbo, self.stats, self.activated_fbo, self.activated, self.texture) if o
        ]


@dataclass
class _OutputSlot:
    """GL objects sized by (tensor layout, output size)."""

    category: moderngl.Texture | None = None
    category_fbo: moderngl.Framebuffer | None = None
    category_luts: tuple[moderngl.Texture, moderngl.Texture] | None = None
    confidence: list[moderngl.Texture] = field(default_factory=list)
    confidence_fbos: list[moderngl.Framebuffer] = field(default_factory=list)
    resize_luts: tuple[moderngl.Texture, moderngl.Texture] | None = None

    def objects(self) -> list:
        objects: list = [*self.confidence_fbos, *self.confidence, self.category_fbo, self.category]
        for luts in (self.category_luts, self.resize_luts):
            if luts:
                objects.extend(luts)
        return [o for o in objects if o]


class GLPipeline:
    """Runs the passes of a frame on one context generation.

    The caller makes the context current and checks its health; the pipeline only issues GL
    calls. ``release()`` frees everything on a live context; ``abandon()`` forgets everything
    without GL calls after a loss.
    """

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
        self._output_slots: OrderedDict[tuple[TensorLayout, int, int], _OutputSlot] = OrderedDict()

    # ----------------------------------------------------------------------------- frame
    def process(
        self,
        tensor: np.ndarray,
        activation: Activation,
        width: int,
        height: int,
        confidence_out: np.ndarray | None,
        category_out: np.ndarray | None,
    ) -> None:
        """Compute the requested masks of ``tensor`` (float32 ``(H, W, C)``) into the given arrays."""
        layout = TensorLayout.for_tensor(*tensor.shape, self.limits.max_texture_size)
        slot = self._tensor_slot(layout)
        self._upload(slot, tensor)
        output = self._output_slot(layout, width, height)
        if category_out is not None:
            self._draw_category(slot, output, activation, width, height)
        if confidence_out is not None:
            source = self._draw_activation(slot, activation)
            self._draw_confidence(slot, output, source, width, height)
        self._idle.use()
        if category_out is not None:
            output.category.read_into(category_out, alignment=1)
        if confidence_out is not None:
            for c, texture in enumerate(output.confidence):
                texture.read_into(confidence_out[c], alignment=1)

    # ----------------------------------------------------------------------------- passes
    def _draw(self, definition: ProgramDefinition, fbo: moderngl.Framebuffer, textures: dict) -> None:
        program = self.programs.get(definition)
        vao = self._vaos.get(definition)
        if vao is None:
            vao = self._vaos[definition] = self.ctx.vertex_array(program, [])
        for unit, (name, texture) in enumerate(textures.items()):
            texture.use(location=unit)
            uniform = program.get(name, None)
            if uniform is not None:
                uniform.value = unit
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

    def _draw_category(
        self, slot: _TensorSlot, output: _OutputSlot, activation: Activation, width: int, height: int
    ) -> None:
        layout = slot.layout
        if output.category is None:
            output.category = self.ctx.texture((width, height), 1, dtype="u1")
            output.category_fbo = self.ctx.framebuffer(color_attachments=[output.category])
            tx = align_corners_taps(layout.width, width)
            ty = align_corners_taps(layout.height, height)
            output.category_luts = (
                self._lut_texture(_lut([tx.i0, tx.i1, tx.t])),
                self._lut_texture(_lut([ty.i0, ty.i1, ty.t])),
            )
        definition = ProgramDefinition.of(
            _VERTEX,
            "category.frag.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            **layout.params(),
        )
        lut_x, lut_y = output.category_luts
        self._draw(
            definition, output.category_fbo, {"u_tensor": slot.texture, "u_cat_x": lut_x, "u_cat_y": lut_y}
        )

    def _draw_activation(self, slot: _TensorSlot, activation: Activation) -> moderngl.Texture:
        """Activated values at tensor resolution, in the tensor's layout (the tensor itself for none)."""
        if activation is Activation.NONE:
            return slot.texture
        layout = slot.layout
        if slot.activated is None:
            slot.activated = self._float_texture((layout.line, layout.lines), layout.lanes)
            slot.activated_fbo = self.ctx.framebuffer(color_attachments=[slot.activated])
        textures = {"u_tensor": slot.texture}
        if activation is Activation.SOFTMAX:
            if slot.stats is None:
                slot.stats = self._float_texture((layout.width, layout.height), 2)
                slot.stats_fbo = self.ctx.framebuffer(color_attachments=[slot.stats])
            stats = ProgramDefinition.of(_VERTEX, "softmax_stats.frag.glsl", **layout.params())
            self._draw(stats, slot.stats_fbo, {"u_tensor": slot.texture})
            textures["u_stats"] = slot.stats
        definition = ProgramDefinition.of(
            _VERTEX, "activate.frag.glsl", ACTIVATION=_ACTIVATION_CODE[activation], **layout.params()
        )
        self._draw(definition, slot.activated_fbo, textures)
        return slot.activated

    def _draw_confidence(
        self, slot: _TensorSlot, output: _OutputSlot, source: moderngl.Texture, width: int, height: int
    ) -> None:
        layout = slot.layout
        per_pass = self.limits.max_outputs_per_pass
        per_pass -= per_pass % layout.lanes  # a pass starts on a group boundary
        if not output.confidence:
            output.confidence = [self._float_texture((width, height), 1) for _ in range(layout.channels)]
            output.confidence_fbos = [
                self.ctx.framebuffer(color_attachments=output.confidence[first : first + per_pass])
                for first in range(0, layout.channels, per_pass)
            ]
            if (layout.width, layout.height) == (width, height):
                tx, ty = identity_taps(width), identity_taps(height)
            else:
                tx, ty = resize_taps(layout.width, width, "x"), resize_taps(layout.height, height, "y")
            output.resize_luts = (
                self._lut_texture(_lut([tx.i0, tx.i1, tx.w0, tx.w1])),
                self._lut_texture(_lut([ty.i0, ty.i1, ty.w0, ty.w1])),
            )
        lut_x, lut_y = output.resize_luts
        for index, first in enumerate(range(0, layout.channels, per_pass)):
            definition = ProgramDefinition.of(
                _VERTEX,
                "confidence.frag.glsl",
                FIRST_GROUP=first // layout.lanes,
                PASS_OUTPUTS=min(per_pass, layout.channels - first),
                **layout.params(),
            )
            self._draw(
                definition,
                output.confidence_fbos[index],
                {"u_source": source, "u_resize_x": lut_x, "u_resize_y": lut_y},
            )

    # ----------------------------------------------------------------------------- pools
    def _float_texture(self, size: tuple[int, int], components: int) -> moderngl.Texture:
        texture = self.ctx.texture(size, components, dtype="f4")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        texture.repeat_x = texture.repeat_y = False
        return texture

    def _lut_texture(self, table: np.ndarray) -> moderngl.Texture:
        texture = self._float_texture((table.shape[0], 1), 4)
        texture.write(table)
        return texture

    def _tensor_slot(self, layout: TensorLayout) -> _TensorSlot:
        slot = self._tensor_slots.get(layout)
        if slot is not None:
            self._tensor_slots.move_to_end(layout)
            return slot
        texture = self._float_texture((layout.line, layout.lines), layout.lanes)
        staging = np.zeros(layout.line * layout.lines * layout.lanes, np.float32) if layout.padded else None
        slot = self._tensor_slots[layout] = _TensorSlot(layout, texture, staging)
        self._evict(self._tensor_slots)
        return slot

    def _output_slot(self, layout: TensorLayout, width: int, height: int) -> _OutputSlot:
        key = (layout, width, height)
        slot = self._output_slots.get(key)
        if slot is not None:
            self._output_slots.move_to_end(key)
            return slot
        slot = self._output_slots[key] = _OutputSlot()
        self._evict(self._output_slots)
        return slot

    def _evict(self, pool: OrderedDict) -> None:
        self._idle.use()
        while len(pool) > POOL_SIZE:
            _, slot = pool.popitem(last=False)
            for obj in slot.objects():
                obj.release()

    def live_objects(self) -> int:
        """GL objects this pipeline holds (textures, framebuffers, vertex arrays, programs)."""
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
