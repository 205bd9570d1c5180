"""Reading a frame's masks back to host memory: ``"direct"`` or ``"mapped"``.

A frame's outputs are described by a :class:`FrameReadout` (what to read: whole textures, or a
viewport of a framebuffer attachment when the output slot is larger than the frame, or ranges of
the buffers that compute passes wrote: :class:`BufferRead`). A strategy
then runs in three steps, which :meth:`gpu_seg.gl.pipeline.GLPipeline.process` calls in a row and
an owner that checks the context between them may call one by one:

1. ``start(readout)`` (GL, at the end of the frame's passes);
2. ``wait()`` (GL): the results are in host memory afterwards;
3. ``collect(confidence_out, category_out)``: into the caller's arrays. ``needs_gl`` says whether
   this step makes GL calls (then it runs with the context current, and the arrays are written
   before the frame is known good).

Strategies:

* :class:`DirectReadback` (``"direct"``): ``collect`` reads each texture straight into the
  destination array (``glGetTexImage``/``glReadPixels`` into pageable memory, one synchronous
  read per mask). On llvmpipe, where a "texture" is host memory, this is one ``memcpy`` per mask
  and the fastest there is.
* :class:`MappedReadback` (``"mapped"``): ``start`` queues every read into one persistently
  mapped, client-storage buffer (``GL_ARB_buffer_storage``) and one fence; ``wait`` waits for
  that fence; ``collect`` is a plain host copy out of the mapping (split over a few threads when
  large, see :func:`copy_rows`), no GL call, so it may run after the owner's health check. On a
  discrete GPU the reads become DMA transfers that overlap, and nothing waits per mask (measured
  on an H100 in a micro-benchmark: deeplab's 174 MB in 19 ms instead of 46 ms, see
  ``docs/gpu-data-path.md``). Measured on llvmpipe (2 cores): 1.15-1.5x slower than direct per
  frame (one more copy), so direct is the default there.

``MappedReadback`` keeps a small ring of such buffers (each with its own fence), which serves two
more things:

* **frames in flight**: ``start`` returns a ticket (the ring slot); several frames may be started
  before the first is waited for, so the DMA of one overlaps the passes of the next;
* **zero-copy results**: ``lend(ticket)`` returns read-only numpy views of the slot's mapped memory
  instead of copying (as MediaPipe's ``MPMask`` lends its data). A slot is not reused while any
  array derived from a lent view is alive (each lending creates one root array that every derived
  view keeps alive, so the slot counts references to it): held views are never overwritten, and a
  ring whose slots are all held raises :class:`~gpu_seg.errors.CapacityError` instead. The owner
  keeps the context (and so the mapping) alive while views exist, even after a loss.

Two details of ``start``: buffer reads that lie back to back (the compute passes' planes) are
copied as one range; and a frame started with ``stream=True`` is also fenced every
:data:`STREAM_CHUNK_BYTES`, so that :meth:`MappedReadback.stream_into` copies each part into fresh
arrays while the GPU moves the next (a candidate, ``GLPipeline.stream_collect``).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import moderngl
import numpy as np

from .. import forks
from ..errors import CapacityError
from .rawgl import GLFunctions, MappedArena

__all__ = ["BufferRead", "DirectReadback", "FrameReadout", "ImageRead", "MappedReadback", "Read", "Readback"]

#: Offset of the category image in the mapped buffer: a multiple of this (bytes).
_ALIGN = 256
#: Why a frame takes a ring slot: a synchronous frame (copied at once), a frame in flight, a frame
#: whose results are lent as views, or an owned frame returned as writeable views (the
#: ``owned_views`` candidate: slots of their own, beyond the others). One slot is always kept for
#: synchronous frames.
Purpose = Literal["sync", "async", "lend", "owned"]


@dataclass(frozen=True)
class ImageRead:
    """A 2-D image to read: a whole texture, or the ``(0, 0, width, height)`` viewport of a
    framebuffer attachment (when the texture is larger than the frame's output)."""

    texture: moderngl.Texture
    framebuffer: moderngl.Framebuffer | None
    attachment: int
    width: int  # texels
    height: int
    dtype: str  # moderngl dtype of one-component texels
    itemsize: int

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.itemsize

    def read_into(self, target: np.ndarray | moderngl.Buffer, offset: int = 0) -> None:
        """Read into a host array (``offset`` 0) or into a pack buffer at byte ``offset``."""
        if self.framebuffer is None:
            self.texture.read_into(target, alignment=1, write_offset=offset)
        else:
            self.framebuffer.read_into(
                target,
                viewport=(0, 0, self.width, self.height),
                components=1,
                attachment=self.attachment,
                alignment=1,
                dtype=self.dtype,
                write_offset=offset,
            )


@dataclass(frozen=True)
class BufferRead:
    """A 2-D image lying in a GL buffer (written by the compute passes, :mod:`.compute`): ``height``
    rows of ``width`` texels of ``itemsize`` bytes, tightly packed, from byte ``offset``.

    Read the way an :class:`ImageRead` is: into a host array (``glGetBufferSubData``) or into a
    buffer at a byte offset (``glCopyBufferSubData``, a GPU-side copy).
    """

    buffer: moderngl.Buffer
    offset: int
    width: int  # texels
    height: int
    dtype: str  # moderngl dtype of the texels (as ImageRead's)
    itemsize: int

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.itemsize

    def read_into(self, target: np.ndarray | moderngl.Buffer, offset: int = 0) -> None:
        """Read into a host array (``offset`` 0) or copy into a buffer at byte ``offset``."""
        if isinstance(target, moderngl.Buffer):
            self.buffer.ctx.copy_buffer(target, self.buffer, self.nbytes, self.offset, offset)
        else:
            self.buffer.read_into(target, self.nbytes, self.offset)


#: How to read one image of a frame: a texture (fragment passes) or a buffer (compute passes).
Read = ImageRead | BufferRead


@dataclass(frozen=True)
class FrameReadout:
    """What a frame reads back: one image per confidence mask (in order) and the packed category.

    The category image holds 4 pixels per texel: ``(height, 4 * quads)`` bytes, of which the
    first ``category_width`` columns are the mask.
    """

    confidence: tuple[Read, ...]
    category: Read | None
    category_width: int


def _check_confidence(readout: FrameReadout, confidence_out: np.ndarray | None) -> None:
    if confidence_out is None:
        return
    if not readout.confidence:
        raise ValueError("confidence_out given, but the frame computed no confidence masks")
    first = readout.confidence[0]
    expected = (len(readout.confidence), first.height, first.width)
    if confidence_out.shape != expected or confidence_out.itemsize != first.itemsize:
        raise ValueError(f"confidence_out is {confidence_out.shape}, the frame computed {expected}")
    if not confidence_out.flags.c_contiguous:
        raise ValueError("confidence_out must be C-contiguous")


def _check_category(readout: FrameReadout, category_out: np.ndarray | None) -> None:
    if category_out is None:
        return
    if readout.category is None:
        raise ValueError("category_out given, but the frame computed no category mask")
    expected = (readout.category.height, readout.category_width)
    if category_out.shape != expected or category_out.itemsize != 1:
        raise ValueError(f"category_out is {category_out.shape}, the frame computed {expected}")


#: A streamed frame (:meth:`MappedReadback.stream_into`) is fenced after every this many bytes.
STREAM_CHUNK_BYTES = 4 << 20
#: Copies of at least this many bytes are split over threads (numpy releases the GIL while copying).
PARALLEL_COPY_BYTES = 8 << 20
_COPY_CHUNK_BYTES = 2 << 20
_copy_pool: ThreadPoolExecutor | None = None
_copy_pool_lock = threading.Lock()


def _forget_copy_pool() -> None:
    """In a forked child: the pool's threads are gone (a new pool is made when needed)."""
    global _copy_pool, _copy_pool_lock
    _copy_pool, _copy_pool_lock = None, threading.Lock()


forks.on_fork_in_child(_forget_copy_pool)


def copy_rows(
    copies: list[tuple[np.ndarray, np.ndarray]],
    min_parallel_bytes: int = PARALLEL_COPY_BYTES,
    band_bytes: int = _COPY_CHUNK_BYTES,
) -> None:
    """``np.copyto(destination, source)`` for each pair; large copies in row bands over a few threads.

    Threads are used where there are at least 4 CPUs and the copies add up to
    ``min_parallel_bytes`` (one core does not saturate the memory bus of a large machine); each
    thread copies bands of about ``band_bytes`` (split along the first axis).
    """
    total = sum(destination.nbytes for destination, _ in copies)
    workers = 0 if total < min_parallel_bytes else min(8, (os.cpu_count() or 1) // 2)
    if workers < 2:
        for destination, source in copies:
            np.copyto(destination, source)
        return
    bands = []
    for destination, source in copies:
        step = max(1, band_bytes // max(1, destination[0].nbytes))
        bands += [(destination[i : i + step], source[i : i + step]) for i in range(0, len(destination), step)]
    for future in [_pool(workers).submit(np.copyto, d, s) for d, s in bands]:
        future.result()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _copy_pool
    with _copy_pool_lock:
        if _copy_pool is None:
            _copy_pool = ThreadPoolExecutor(workers, thread_name_prefix="gpu_seg-copy")
        return _copy_pool


def _let_go(anchor: object) -> None:
    """The finalizer of lent views: drops the last reference to their anchor (see ``lend``)."""


class Readback:
    """Interface of the strategies (see the module docstring)."""

    name = ""
    #: Whether :meth:`collect` makes GL calls.
    needs_gl = True

    def __init__(self) -> None:
        self._readout: FrameReadout | None = None

    def start(
        self,
        readout: FrameReadout,
        purpose: Purpose = "sync",
        owner: object | None = None,
        stream: bool = False,
    ) -> int:
        """Queue the frame's reads (GL); returns a ticket for :meth:`wait` and :meth:`collect`
        (``stream``: see :meth:`MappedReadback.start`; ignored by the others)."""
        self._readout = readout
        return 0

    def wait(self, ticket: int | None = None) -> None:
        """Block until the started reads are in host memory (GL, context current)."""

    def collect(
        self, confidence_out: np.ndarray | None, category_out: np.ndarray | None, ticket: int | None = None
    ) -> None:
        raise NotImplementedError

    def check_capacity(self, purpose: Purpose, collect_garbage: bool = True) -> None:
        """Raise CapacityError unless a frame of ``purpose`` can start now (see MappedReadback)."""

    def lent_views(self) -> int:
        """Buffers held by lent views (only the mapped readback lends)."""
        return 0

    def _take(self, confidence_out: np.ndarray | None, category_out: np.ndarray | None) -> FrameReadout:
        readout, self._readout = self._readout, None
        if readout is None:
            raise RuntimeError("collect() without a started frame")
        _check_confidence(readout, confidence_out)
        _check_category(readout, category_out)
        return readout

    def objects(self) -> int:
        """GL objects held."""
        return 0

    def release(self) -> None:
        """Free GL objects (context alive and current)."""
        self._readout = None

    def abandon(self) -> None:
        """Forget GL objects without GL calls (context lost)."""
        self._readout = None


class DirectReadback(Readback):
    """Synchronous reads into the destination arrays (see the module docstring)."""

    name = "direct"
    needs_gl = True

    def __init__(self) -> None:
        super().__init__()
        self._rows = np.empty(0, np.uint8)  # a packed category row is wider than the mask

    def collect(
        self, confidence_out: np.ndarray | None, category_out: np.ndarray | None, ticket: int | None = None
    ) -> None:
        readout = self._take(confidence_out, category_out)
        if confidence_out is not None:
            for index, image in enumerate(readout.confidence):
                image.read_into(confidence_out[index])
        if category_out is not None:
            image = readout.category
            if image.width * 4 == readout.category_width and category_out.flags.c_contiguous:
                image.read_into(category_out)
                return
            if self._rows.size < image.nbytes:
                self._rows = np.empty(image.nbytes, np.uint8)
            rows = self._rows[: image.nbytes].reshape(image.height, image.width * 4)
            image.read_into(rows)
            category_out[...] = rows[:, : readout.category_width]


#: numpy dtype of confidence masks stored in textures of each moderngl dtype (float16 as its bits).
_MASK_DTYPES = {"f4": np.dtype(np.float32), "u2": np.dtype(np.float16), "u1": np.dtype(np.uint8)}


@dataclass(eq=False)
class _ReadSlot:
    """One buffer of the ring and the frame it holds."""

    arena: MappedArena
    offsets: tuple[int, ...] = ()
    readout: FrameReadout | None = None
    started: bool = False  # reads queued, results not yet collected or lent
    ready: bool = False  # waited for: the results are in host memory
    owner: weakref.ref | None = None  # an in-flight frame's handle; gone = never collected
    lent_root: np.ndarray | None = None  # root of the views lent out of this slot
    owned: bool = False  # lent as an owned frame's writeable views (``MappedReadback.MAX_OWNED``)
    #: A streamed frame's partial fences: (fence, bytes of the slot complete once it signals)
    parts: list[tuple[int, int]] = field(default_factory=list)

    def lent(self) -> bool:
        """Whether any array derived from this slot's lent views is still alive."""
        if self.lent_root is None:
            return False
        if sys.getrefcount(self.lent_root) > 2:  # this attribute and the call's argument
            return True
        self.lent_root = None
        return False

    def busy(self) -> bool:
        if self.started and (self.owner is None or self.owner() is not None):
            return True
        if self.lent():
            return True
        self.started = self.ready = self.owned = False
        self.readout, self.owner = None, None
        return False


#: A copy of the mapped readback: (image, source offset: for buffer reads, else 0, destination
#: offset in the slot, bytes).
_Copy = tuple[Read, int, int, int]


def _coalesced(images: list[Read], offsets: list[int]) -> list[_Copy]:
    """The copies of a frame's reads into the slot: runs of buffer reads that lie back to back in one
    buffer and go back to back in the destination become one copy of their whole range (the compute
    passes' planes, whenever a plane is a whole number of 256-byte blocks)."""
    copies: list[_Copy] = []
    for image, offset in zip(images, offsets, strict=True):
        if copies and isinstance(image, BufferRead):
            first, source, start, nbytes = copies[-1]
            if (
                isinstance(first, BufferRead)
                and first.buffer is image.buffer
                and source + nbytes == image.offset
                and start + nbytes == offset
            ):
                copies[-1] = (first, source, start, nbytes + image.nbytes)
                continue
        copies.append((image, image.offset if isinstance(image, BufferRead) else 0, offset, image.nbytes))
    return copies


def _split(copies: list[_Copy], chunk: int) -> list[_Copy]:
    """Buffer copies cut into pieces of at most ``chunk`` bytes (a texture read stays whole)."""
    pieces: list[_Copy] = []
    for image, source, start, nbytes in copies:
        if not isinstance(image, BufferRead):
            pieces.append((image, source, start, nbytes))
            continue
        for done in range(0, nbytes, chunk):
            pieces.append((image, source + done, start + done, min(chunk, nbytes - done)))
    return pieces


class MappedReadback(Readback):
    """A ring of persistent mapped buffers, one fence each (see the module docstring)."""

    name = "mapped"
    needs_gl = False
    #: Buffers in the ring at most (created when needed; one is kept for synchronous frames).
    MAX_SLOTS = 4
    #: Buffers held by owned frames' writeable views at most, beyond ``MAX_SLOTS`` (results held
    #: this way never take the buffers of frames in flight or zero-copy views).
    MAX_OWNED = 3

    def __init__(self, ctx: moderngl.Context, gl: GLFunctions) -> None:
        super().__init__()
        self._ctx = ctx
        self._gl = gl
        self._slots: list[_ReadSlot] = []
        self._last: int | None = None
        self._useless_collection_at: float | None = None  # see check_capacity
        #: Map the buffers of later frames for writing too, so that their results can be lent as
        #: writeable arrays (``lend(writeable=True)``); a free buffer of the other kind is replaced.
        self.writable = False

    # ----------------------------------------------------------------------------- capacity
    def busy_slots(self) -> tuple[int, int, int]:
        """``(frames started and not collected, slots holding lent views, slots holding owned
        frames' views)``."""
        started = lent = owned = 0
        for slot in self._slots:
            if slot.busy():
                if slot.owned:
                    owned += 1
                elif slot.lent_root is not None:
                    lent += 1
                else:
                    started += 1
        return started, lent, owned

    def check_capacity(self, purpose: Purpose, collect_garbage: bool = True) -> None:
        """Raise CapacityError unless a frame of ``purpose`` can take a slot now.

        Results dropped inside reference cycles hold their buffers until Python's cycle collector
        runs: with ``collect_garbage``, a full ring is looked at again after one ``gc.collect()``
        (only when the frame would otherwise be refused, and after one that freed nothing not
        again for :attr:`COLLECT_AGAIN_AFTER_S`).
        """
        problem = self._capacity_problem(purpose)
        if problem is not None and collect_garbage and self._collection_may_help():
            gc.collect()
            problem = self._capacity_problem(purpose)
            self._useless_collection_at = None if problem is None else time.monotonic()
        if problem is not None:
            raise CapacityError(problem)

    #: After a collection that freed no buffer, seconds before a refused frame collects again (an
    #: application that holds its views for real gets CapacityError without a collection each time).
    COLLECT_AGAIN_AFTER_S = 1.0

    def _collection_may_help(self) -> bool:
        last = self._useless_collection_at
        return last is None or time.monotonic() - last >= self.COLLECT_AGAIN_AFTER_S

    def _capacity_problem(self, purpose: Purpose) -> str | None:
        started, lent, owned = self.busy_slots()
        if purpose == "owned":
            if owned < self.MAX_OWNED and started + lent < self.MAX_SLOTS:  # a synchronous frame
                return None
            return f"all {self.MAX_OWNED} buffers for owned views are held"
        spare = self.MAX_SLOTS - started - lent - (0 if purpose == "sync" else 1)
        if spare >= 1:
            return None
        return (
            f"all {self.MAX_SLOTS} result buffers are in use ({started} frame(s) in flight, {lent} held "
            "by zero-copy results): collect pending frames, release() zero-copy results and drop the "
            "arrays taken from them"
        )

    def lent_views(self) -> int:
        """Slots whose lent views are still referenced."""
        return sum(slot.lent() for slot in self._slots)

    # ----------------------------------------------------------------------------- frames
    def start(
        self,
        readout: FrameReadout,
        purpose: Purpose = "sync",
        owner: object | None = None,
        stream: bool = False,
    ) -> int:
        """Queue the frame's reads into a free slot; returns its ticket.

        ``stream``: also fence (and flush) after every :data:`STREAM_CHUNK_BYTES` of confidence
        masks, so that :meth:`stream_into` copies each part while the GPU moves the next.
        """
        self.check_capacity(purpose)
        mode = "readwrite" if self.writable else "read"
        index = next((i for i, slot in enumerate(self._slots) if not slot.busy()), None)
        if index is None:
            self._slots.append(_ReadSlot(MappedArena(self._ctx, self._gl, mode, growth=1.25)))
            index = len(self._slots) - 1
        slot = self._slots[index]
        if slot.arena.mode != mode:
            slot.arena.release()
            slot.arena = MappedArena(self._ctx, self._gl, mode, growth=1.25)
        slot.arena.drop_fence()
        self._drop_parts(slot)
        images = [*readout.confidence, *([readout.category] if readout.category else [])]
        offsets, end = [], 0
        for number, image in enumerate(images):
            if number == len(readout.confidence):  # the category after the planes, aligned
                end = -(-end // _ALIGN) * _ALIGN
            offsets.append(end)
            end += image.nbytes  # planes back to back: lent masks are one (C, H, W) array
        slot.arena.ensure(end)
        target = slot.arena.buffer.buffer
        copies = _coalesced(images, offsets)
        if stream:
            copies = _split(copies, STREAM_CHUNK_BYTES)
        unfenced = 0
        for number, (image, source, offset, nbytes) in enumerate(copies):
            if isinstance(image, BufferRead):
                image.buffer.ctx.copy_buffer(target, image.buffer, nbytes, source, offset)
            else:
                image.read_into(target, offset)
            unfenced += nbytes
            if stream and unfenced >= STREAM_CHUNK_BYTES and number + 1 < len(copies):
                slot.parts.append((self._gl.fence(), offset + nbytes))  # bytes [0, offset + nbytes)
                self._gl.glFlush()
                unfenced = 0
        slot.arena.fence()
        if purpose == "async":
            self._gl.glFlush()  # start the GPU on it now: nobody waits (and so flushes) soon
        slot.offsets, slot.readout = tuple(offsets), readout
        slot.started, slot.ready = True, False
        slot.owner = None if owner is None else weakref.ref(owner)
        self._last = index
        return index

    def wait(self, ticket: int | None = None) -> None:
        slot = self._slot(ticket)
        slot.arena.wait()
        self._drop_parts(slot)  # signalled before the last fence
        slot.ready = True

    def stream_into(
        self, confidence_out: np.ndarray | None, category_out: np.ndarray | None, ticket: int | None = None
    ) -> None:
        """Wait for a frame started with ``stream=True`` part by part and copy each part of the
        confidence masks as soon as it is in host memory (while the GPU moves the next), then the
        rest and the category (GL, context current: fence waits).

        For arrays nobody else sees before the frame is known good (fresh ones): they are written
        before the owner's health check. Same arguments and checks as :meth:`collect`.
        """
        slot = self._slot(ticket)
        readout = slot.readout
        assert readout is not None
        _check_confidence(readout, confidence_out)
        _check_category(readout, category_out)
        host = slot.arena.buffer.host
        flat = None if confidence_out is None else confidence_out.reshape(-1).view(np.uint8)
        total = 0 if flat is None else flat.size
        done = 0
        while slot.parts:
            fence, complete = slot.parts.pop(0)
            self._gl.wait(fence)  # deletes it
            end = min(complete, total)
            if end > done:
                copy_rows([(flat[done:end], host[done:end])])
                done = end
        slot.arena.wait()
        slot.ready = True
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        if flat is not None and done < total:
            copies.append((flat[done:], host[done:total]))
        if category_out is not None:
            copies.append((category_out, self._views(slot, host)[1]))
        self._finish(slot)
        copy_rows(copies)

    def _drop_parts(self, slot: _ReadSlot) -> None:
        for fence, _ in slot.parts:
            self._gl.delete(fence)
        slot.parts.clear()

    def collect(
        self, confidence_out: np.ndarray | None, category_out: np.ndarray | None, ticket: int | None = None
    ) -> None:
        slot = self._ready_slot(ticket)
        readout = slot.readout
        _check_confidence(readout, confidence_out)
        _check_category(readout, category_out)
        confidence, category = self._views(slot, slot.arena.buffer.host)
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        if confidence_out is not None:
            copies += list(zip(confidence_out, confidence, strict=True))
        if category_out is not None:
            copies.append((category_out, category))
        self._finish(slot)
        copy_rows(copies)

    def lend(
        self, ticket: int | None = None, writeable: bool = False, anchor: object = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Read-only views of the frame's results in mapped memory (see the module docstring), or
        writeable ones where the frame's buffer was mapped for writing too (:attr:`writable`).

        ``anchor`` (the keeper context of an owned context's share group) is kept alive for as long
        as any of the views is: whatever becomes of the processor meanwhile (a loss, ``close()``,
        garbage collection), the share group and so the mapped memory outlive the views.

        The confidence view is a C-contiguous ``(masks, height, width)`` array; the category view
        is ``(height, width)`` with a row stride of the packed width (a multiple of 4 bytes).
        """
        slot = self._ready_slot(ticket)
        if writeable and slot.arena.mode != "readwrite":
            raise RuntimeError("lend(writeable=True) of a frame whose buffer is mapped for reading only")
        memory = memoryview(slot.arena.buffer.host)
        root = np.frombuffer(memory if writeable else memory.toreadonly(), np.uint8)
        confidence, category = self._views(slot, root)
        self._finish(slot)
        slot.lent_root = root
        slot.owned = writeable
        if anchor is not None:
            weakref.finalize(root, _let_go, anchor).atexit = False
        return confidence, category

    def _slot(self, ticket: int | None) -> _ReadSlot:
        index = self._last if ticket is None else ticket
        if index is None or index >= len(self._slots) or not self._slots[index].started:
            raise RuntimeError("collect() without a started frame")
        return self._slots[index]

    def _ready_slot(self, ticket: int | None) -> _ReadSlot:
        slot = self._slot(ticket)
        if not slot.ready:
            raise RuntimeError("collect() before wait()")
        return slot

    @staticmethod
    def _finish(slot: _ReadSlot) -> None:
        slot.started = slot.ready = False
        slot.owner = None

    @staticmethod
    def _views(slot: _ReadSlot, host: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        readout = slot.readout
        assert readout is not None
        confidence = category = None
        if readout.confidence:
            first = readout.confidence[0]
            start = slot.offsets[0]
            stop = start + first.nbytes * len(readout.confidence)
            confidence = host[start:stop].view(_MASK_DTYPES[first.dtype])
            confidence = confidence.reshape(len(readout.confidence), first.height, first.width)
        if readout.category is not None:
            image, offset = readout.category, slot.offsets[len(readout.confidence)]
            rows = host[offset : offset + image.nbytes].reshape(image.height, image.width * 4)
            category = rows[:, : readout.category_width]
        return confidence, category

    # ----------------------------------------------------------------------------- objects
    def objects(self) -> int:
        return sum(slot.arena.objects() for slot in self._slots)

    def release(self) -> None:
        """Free every slot whose views are not held (those stay until :meth:`release_lent`)."""
        kept = []
        for slot in self._slots:
            self._drop_parts(slot)
            if slot.lent():
                kept.append(slot)
            else:
                slot.arena.release()
        self._slots = kept
        self._last = None
        super().release()

    def release_lent(self) -> None:
        """Free the slots kept for lent views (their views are gone; context alive and current)."""
        for slot in self._slots:
            slot.arena.release()
        self._slots = []

    def abandon(self) -> None:
        """Forget every slot without GL calls, except those lent views still reference: their
        memory stays mapped while the owner keeps the (dead) context undestroyed."""
        kept = []
        for slot in self._slots:
            slot.parts.clear()  # no GL calls on a lost context
            if slot.lent():
                kept.append(slot)
            else:
                slot.arena.abandon()
        self._slots = kept
        self._last = None
        super().abandon()
