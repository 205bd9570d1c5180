"""Pooled GL objects: created all at once or not at all, kept in bounded pools.

A *slot* holds the GL objects one kind of frame needs: :class:`TensorSlot` per tensor layout,
:class:`OutputSlot` per output kind (tensor layout, confidence format and channels) and capacity.
Optional parts (the activation target, the softmax statistics, the category and confidence
targets, ...) are built by an :class:`ObjectBuilder`: every object of the part is created, then
the part is published in one assignment; if any GL call fails, the objects created so far are
released and nothing is published, so a failed frame never leaves a half-created slot behind for
the next frame to trip over.

Output sizes: an :class:`OutputSlot` has a *capacity* (texture size) and serves any output size
that fits, drawing into a viewport and reading that viewport back. :class:`OutputPool` picks the
slot of the exact size when there is one; a size that does not fit any slot gets a slot that covers
it and every slot of its kind (the old ones are released); a size that keeps coming back
(``EXACT_AFTER`` frames in a row) gets its own exact slot, whose reads are whole textures. So an
application that resizes its window every frame reuses one slot of the largest size seen (no GL
allocation per frame, memory bounded by that slot), and one that stays at a size gets exact slots.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import moderngl
import numpy as np

from ..frame import ConfidenceFormat
from .plan import BlockRanges, ConfidencePlan, TensorLayout, resize_tables
from .session import released

__all__ = [
    "CategoryPart",
    "CellsPart",
    "ComputeConfidencePart",
    "ConfidencePart",
    "ObjectBuilder",
    "OutputKind",
    "OutputPool",
    "OutputSlot",
    "RelayoutPart",
    "ResidentPart",
    "Target",
    "TensorPool",
    "TensorSlot",
]

log = logging.getLogger("gpu_seg")

#: Slots of each pool kept before the least recently used one is released.
POOL_SIZE = 4


def release_all(objects: list) -> None:
    """Release GL objects in order; the context must be alive and current."""
    for obj in objects:
        obj.release()


class ObjectBuilder:
    """Creates the GL objects of one slot part; on an exception, releases what it created.

    Use as a context manager; build everything, then publish the part after the ``with`` block.
    A texture that the driver refused (``glGetError`` after creation) raises ``moderngl.Error``.
    ``on_built(n)`` is called after a successful build of ``n`` objects.
    """

    def __init__(self, ctx: moderngl.Context, on_built: Callable[[int], None] | None = None) -> None:
        self.ctx = ctx
        self.created: list = []
        self._on_built = on_built

    def __enter__(self) -> ObjectBuilder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            if self._on_built is not None:
                self._on_built(len(self.created))
            return
        for obj in reversed(self.created):
            try:
                obj.release()
            except Exception as error:  # the context may be dying; the original error matters
                log.debug("releasing a partly built slot: %s", error)
        self.created.clear()

    def _keep(self, obj):
        self.created.append(obj)
        return obj

    def texture(self, size: tuple[int, int], components: int, dtype: str = "f4") -> moderngl.Texture:
        texture = self._keep(self.ctx.texture(size, components, dtype=dtype))
        error = self.ctx.error
        if error != "GL_NO_ERROR":
            raise moderngl.Error(f"cannot create a {size[0]}x{size[1]} {dtype} texture: {error}")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        texture.repeat_x = texture.repeat_y = False
        return texture

    def target(self, size: tuple[int, int], components: int, dtype: str = "f4") -> Target:
        texture = self.texture(size, components, dtype)
        return Target(texture, self.framebuffer([texture]))

    def framebuffer(self, textures: list[moderngl.Texture]) -> moderngl.Framebuffer:
        return self._keep(self.ctx.framebuffer(color_attachments=textures))

    def buffer(self, reserve: int) -> moderngl.Buffer:
        return self._keep(self.ctx.buffer(reserve=max(4, reserve), dynamic=True))

    def storage(self, nbytes: int) -> moderngl.Buffer:
        """A buffer written and read by the GPU only (a shader storage buffer of compute passes)."""
        return self._keep(self.ctx.buffer(reserve=max(4, nbytes)))

    def sampler(self) -> moderngl.Sampler:
        """A NEAREST, clamped sampler object (overrides a texture's own filter state where bound)."""
        nearest = (moderngl.NEAREST, moderngl.NEAREST)
        return self._keep(self.ctx.sampler(repeat_x=False, repeat_y=False, filter=nearest))

    def lut(self, length: int) -> moderngl.Texture:
        """A ``length x 1`` RGBA float32 lookup table (written per output size)."""
        return self.texture((length, 1), 4)


@dataclass(frozen=True)
class Target:
    """A texture and the framebuffer that renders into it."""

    texture: moderngl.Texture
    framebuffer: moderngl.Framebuffer

    def objects(self) -> list:
        return [self.framebuffer, self.texture]


@dataclass(frozen=True)
class CellsPart:
    """Category shortcut, at tensor resolution: per texel (class, lead, scale) in RGBA32F
    (``classes``), per cell its class or -1 when unsure, and a host copy."""

    classes: Target
    cells: Target
    host: np.ndarray  # int32 (H, W)

    def objects(self) -> list:
        return [*self.cells.objects(), *self.classes.objects()]


@dataclass
class RelayoutPart:
    """GL-side tensors (:mod:`.resident`): a framebuffer that renders into the tensor texture, and
    the R32F texture a caller's buffer is unpacked into (built when a buffer first comes)."""

    framebuffer: moderngl.Framebuffer
    raw: moderngl.Texture | None = None
    sampler: moderngl.Sampler | None = None  # NEAREST, for a caller's texture (built on first use)

    def objects(self) -> list:
        return [self.framebuffer, *(o for o in (self.raw, self.sampler) if o)]


@dataclass
class TensorSlot:
    """GL objects sized by the tensor layout; the parts are built on first use."""

    layout: TensorLayout
    texture: moderngl.Texture
    staging: np.ndarray | None  # flat float32 copy of the texture, for padded layouts
    activated: Target | None = None
    stats: Target | None = None
    cells: CellsPart | None = None
    relayout: RelayoutPart | None = None  # GL-side inputs (process_resident)
    device_input: moderngl.Buffer | None = None  # the texels of CUDA inputs (gpu_seg.cuda.interop)

    def objects(self) -> list:
        objects = [*(self.cells.objects() if self.cells else ())]
        objects += self.relayout.objects() if self.relayout else []
        objects += [self.device_input] if self.device_input else []
        for part in (self.stats, self.activated):
            objects += part.objects() if part else []
        return [*objects, self.texture]


@dataclass
class CategoryPart:
    """The packed category target (4 pixels per R32UI texel) and the shortcut's rectangles."""

    target: Target
    rects: moderngl.Buffer
    rects_vao: moderngl.VertexArray | None = None  # made for the current rectangle program
    blocks: BlockRanges | None = None  # shortcut blocks for ``size``
    size: tuple[int, int] | None = None  # the output size of the last frame drawn
    unpacked: Target | None = None  # one R8UI texel per pixel, for resident results (.resident)

    def objects(self) -> list:
        unpacked = self.unpacked.objects() if self.unpacked else []
        return [o for o in (self.rects_vao, self.rects) if o] + unpacked + self.target.objects()


@dataclass
class ConfidencePart:
    """Confidence textures (one per mask), their MRT framebuffers, the rows texture and the resize tables."""

    plan: ConfidencePlan
    textures: tuple[moderngl.Texture, ...]
    framebuffers: tuple[moderngl.Framebuffer, ...]  # one per pass of the plan
    rows: Target
    lut_x: moderngl.Texture
    lut_y: moderngl.Texture
    size: tuple[int, int] | None = None  # the output size the tables hold

    def objects(self) -> list:
        return [*self.framebuffers, *self.textures, *self.rows.objects(), self.lut_x, self.lut_y]


@dataclass
class ComputeConfidencePart:
    """Compute passes (:mod:`.compute`): the planar rows buffer, the resize tables, the channel table
    and the planes buffer (float32 masks back to back, a plane stride of whole 256-byte blocks; built
    by the first frame that reads the masks from it: resident frames that lend textures write them
    straight into the textures), or the textures of float16/uint8 masks."""

    rows: moderngl.Buffer
    lut_x: moderngl.Texture
    lut_y: moderngl.Texture
    channels: moderngl.Buffer | None  # int32 channel of each mask (None: mask k is channel k)
    planes: moderngl.Buffer | None = None
    size: tuple[int, int] | None = None  # the output size the tables hold
    #: float16/uint8 masks: one R16UI/R8UI texture per mask of the slot's size, and a framebuffer
    #: each to read the frame's viewport of it (built by the first frame of such a format)
    textures: tuple[moderngl.Texture, ...] = ()
    framebuffers: tuple[moderngl.Framebuffer, ...] = ()

    def objects(self) -> list:
        optional = [obj for obj in (self.channels, self.planes) if obj is not None]
        return [self.rows, self.lut_x, self.lut_y, *optional, *self.framebuffers, *self.textures]


@dataclass
class ResidentPart:
    """Resident frames of the compute passes (:mod:`.resident`): the exact-size textures lent to the
    caller, written by the compute passes (one R32F, R16UI or R8UI texture per mask after its
    format; the R8UI category), each built when a frame first needs it."""

    confidence: tuple[moderngl.Texture, ...] = ()
    category: moderngl.Texture | None = None

    def objects(self) -> list:
        return [*self.confidence, *([self.category] if self.category else [])]


@dataclass(frozen=True)
class OutputKind:
    """What output slots are interchangeable for: same tensor layout, format and channels."""

    layout: TensorLayout
    format: ConfidenceFormat
    channels: tuple[int, ...] | None  # None: every channel, in order


@dataclass
class OutputSlot:
    """GL objects for outputs of a kind, sized ``capacity`` = (width, height); serves any size that fits."""

    kind: OutputKind
    capacity: tuple[int, int]
    category: CategoryPart | None = None
    confidence: ConfidencePart | None = None
    compute_category: moderngl.Buffer | None = None  # packed category rows (compute pass)
    compute_confidence: ComputeConfidencePart | None = None
    resident: ResidentPart | None = None  # textures of resident frames of the compute passes

    def fits(self, width: int, height: int) -> bool:
        return width <= self.capacity[0] and height <= self.capacity[1]

    def exact(self, width: int, height: int) -> bool:
        return self.capacity == (width, height)

    def objects(self) -> list:
        objects = self.category.objects() if self.category else []
        objects += self.compute_confidence.objects() if self.compute_confidence else []
        objects += [self.compute_category] if self.compute_category else []
        objects += self.resident.objects() if self.resident else []
        return objects + (self.confidence.objects() if self.confidence else [])


class TensorPool:
    """Tensor slots by layout, at most ``POOL_SIZE``, least recently used released first."""

    def __init__(self) -> None:
        self.slots: OrderedDict[TensorLayout, TensorSlot] = OrderedDict()

    def get(self, layout: TensorLayout) -> TensorSlot | None:
        slot = self.slots.get(layout)
        if slot is not None:
            self.slots.move_to_end(layout)
        return slot

    def add(self, slot: TensorSlot) -> list:
        """Publish ``slot``; returns the GL objects of the slots it pushed out (release them)."""
        self.slots[slot.layout] = slot
        evicted: list = []
        while len(self.slots) > POOL_SIZE:
            evicted += self.slots.popitem(last=False)[1].objects()
        return evicted

    def objects(self) -> list:
        return [obj for slot in list(self.slots.values()) for obj in slot.objects()]

    def clear(self) -> list:
        objects = self.objects()
        self.slots.clear()
        return objects


class OutputPool:
    """Output slots, at most ``POOL_SIZE``, chosen for a size as the module docstring says.

    A slot that no frame used for ``IDLE_FRAMES`` frames of this pool is released too, so the
    large slot of a burst of resizes does not outlive the burst.
    """

    #: Frames in a row at one size, served by a larger slot, before that size gets its own slot.
    EXACT_AFTER = 3
    #: A covering slot's capacity is rounded up to a multiple of this many pixels.
    ROUND = 32
    #: Frames without use after which a slot is released.
    IDLE_FRAMES = 240

    def __init__(self) -> None:
        self.slots: OrderedDict[tuple[OutputKind, tuple[int, int]], OutputSlot] = OrderedDict()
        self._streak: tuple[tuple, int] = ((), 0)
        self._frame = 0
        self._last_used: dict[tuple[OutputKind, tuple[int, int]], int] = {}
        #: Slots whose textures were lent (resident frames), and the objects of damaged slots
        #: taken out, released with the next :meth:`release_idle`.
        self._lent: set[tuple[OutputKind, tuple[int, int]]] = set()
        self._damaged: list = []

    def lent(self, slot: OutputSlot) -> None:
        """``slot``'s textures were lent to the application (checked by every later frame)."""
        self._lent.add((slot.kind, slot.capacity))

    def _take_out_damaged(self) -> None:
        """Take out the lent slots with an object the application released (lent textures must
        never be released): the frame makes new ones instead of using a dead handle."""
        for key in list(self._lent):
            slot = self.slots.get(key)
            if slot is None:
                self._lent.discard(key)
            elif any(released(obj) for obj in slot.objects()):
                log.warning(
                    "gpu_seg: a texture lent by process_resident() was released by the application (lent "
                    "textures must never be released); gpu_seg makes the %dx%d output textures again",
                    *slot.capacity,
                )
                self._lent.discard(key)
                self._damaged += self._pop(key).objects()

    def find(self, kind: OutputKind, width: int, height: int) -> tuple[OutputSlot | None, tuple[int, int]]:
        """The slot to use for a frame, or None and the capacity of the slot to create for it."""
        self._frame += 1
        if self._lent:
            self._take_out_damaged()
        request = (kind, width, height)
        streak = self._streak[1] + 1 if self._streak[0] == request else 1
        self._streak = (request, streak)
        exact = self.slots.get((kind, (width, height)))
        if exact is not None:
            return self._use(exact), (width, height)
        same_kind = [slot for slot in self.slots.values() if slot.kind == kind]
        covering = [slot for slot in same_kind if slot.fits(width, height)]
        if covering and streak < self.EXACT_AFTER:
            return self._use(min(covering, key=lambda s: s.capacity[0] * s.capacity[1])), (width, height)
        if covering or not same_kind:
            return None, (width, height)
        widest = max(width, *(s.capacity[0] for s in same_kind))
        tallest = max(height, *(s.capacity[1] for s in same_kind))
        return None, (_round_up(widest, self.ROUND), _round_up(tallest, self.ROUND))

    def exact(self, kind: OutputKind, width: int, height: int) -> OutputSlot | None:
        """The slot of exactly ``(width, height)`` (resident frames lend whole textures), or None:
        then create one of that capacity and :meth:`add` it."""
        self._frame += 1
        if self._lent:
            self._take_out_damaged()
        exact = self.slots.get((kind, (width, height)))
        return None if exact is None else self._use(exact)

    def _use(self, slot: OutputSlot) -> OutputSlot:
        key = (slot.kind, slot.capacity)
        self.slots.move_to_end(key)
        self._last_used[key] = self._frame
        return slot

    def add(self, slot: OutputSlot) -> list:
        """Publish ``slot`` (used by this frame); returns the GL objects of the slots it replaces.

        Released: slots of the same kind that ``slot`` covers, slots idle for ``IDLE_FRAMES``, and
        the least recently used ones past ``POOL_SIZE``.
        """
        evicted: list = []
        for key, other in list(self.slots.items()):
            redundant = other.kind == slot.kind and slot.fits(*other.capacity)
            if redundant or self._frame - self._last_used.get(key, self._frame) > self.IDLE_FRAMES:
                evicted += self._pop(key).objects()
        self.slots[(slot.kind, slot.capacity)] = slot
        self._use(slot)
        while len(self.slots) > POOL_SIZE:
            evicted += self._pop(next(iter(self.slots))).objects()
        return evicted

    def release_idle(self) -> list:
        """Take out the slots idle for ``IDLE_FRAMES``; returns their GL objects (and those of
        damaged slots taken out)."""
        idle = [key for key in self.slots if self._frame - self._last_used.get(key, 0) > self.IDLE_FRAMES]
        damaged, self._damaged = self._damaged, []
        return damaged + [obj for key in idle for obj in self._pop(key).objects()]

    def _pop(self, key: tuple[OutputKind, tuple[int, int]]) -> OutputSlot:
        self._last_used.pop(key, None)
        return self.slots.pop(key)

    def objects(self) -> list:
        return [obj for slot in list(self.slots.values()) for obj in slot.objects()]

    def clear(self) -> list:
        objects = self._damaged + self.objects()
        self.slots.clear()
        self._last_used.clear()
        self._lent.clear()
        self._damaged = []
        return objects


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def write_resize_tables(
    part: ConfidencePart | ComputeConfidencePart, layout: TensorLayout, size: tuple[int, int]
) -> None:
    """Fill a confidence part's resize tables (``lut_x``, ``lut_y``) for output ``size`` = (width,
    height), unless they already hold that size's."""
    if part.size == size:
        return
    width, height = size
    table_x, table_y = resize_tables(layout, width, height)
    part.lut_x.write(table_x, viewport=(0, 0, width, 1))
    part.lut_y.write(table_y, viewport=(0, 0, height, 1))
    part.size = size
