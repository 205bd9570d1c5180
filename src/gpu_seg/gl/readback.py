"""Reading a frame's masks back to host memory: ``"direct"`` or ``"mapped"``.

A frame's outputs are described by a :class:`FrameReadout` (what to read: whole textures, or a
viewport of a framebuffer attachment when the output slot is larger than the frame). A strategy
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

Zero-copy results (views of the mapping, as MediaPipe's ``MPMask`` lends its data) are not offered:
the mapping is owned by the driver and vanishes with the context (a loss, ``trim()``, ``close()``),
so a view handed to the caller could point to unmapped memory. A safe design needs a ring of
mapped buffers whose views are lent with an explicit release, and a pipeline that refuses to
reuse or free a buffer while a loan is open (``ContextLostError`` on access after a loss).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import moderngl
import numpy as np

from .rawgl import GLFunctions, MappedArena

__all__ = ["DirectReadback", "FrameReadout", "ImageRead", "MappedReadback", "Readback"]

#: Offsets of the images in the mapped buffer are multiples of this (bytes).
_ALIGN = 256


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
class FrameReadout:
    """What a frame reads back: one image per confidence mask (in order) and the packed category.

    The category image holds 4 pixels per texel: ``(height, 4 * quads)`` bytes, of which the
    first ``category_width`` columns are the mask.
    """

    confidence: tuple[ImageRead, ...]
    category: ImageRead | None
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


#: Copies of at least this many bytes are split over threads (numpy releases the GIL while copying).
PARALLEL_COPY_BYTES = 8 << 20
_COPY_CHUNK_BYTES = 2 << 20
_copy_pool: ThreadPoolExecutor | None = None
_copy_pool_lock = threading.Lock()


def copy_rows(copies: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``np.copyto(destination, source)`` for each pair; large copies in row bands over a few threads.

    Threads are used where there are at least 4 CPUs and the copies add up to
    ``PARALLEL_COPY_BYTES`` (one core does not saturate the memory bus of a large machine).
    """
    total = sum(destination.nbytes for destination, _ in copies)
    workers = min(8, (os.cpu_count() or 1) // 2)
    if total < PARALLEL_COPY_BYTES or workers < 2:
        for destination, source in copies:
            np.copyto(destination, source)
        return
    bands = []
    for destination, source in copies:
        step = max(1, _COPY_CHUNK_BYTES // max(1, destination[0].nbytes))
        bands += [(destination[i : i + step], source[i : i + step]) for i in range(0, len(destination), step)]
    for future in [_pool(workers).submit(np.copyto, d, s) for d, s in bands]:
        future.result()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _copy_pool
    with _copy_pool_lock:
        if _copy_pool is None:
            _copy_pool = ThreadPoolExecutor(workers, thread_name_prefix="gpu_seg-copy")
        return _copy_pool


class Readback:
    """Interface of the strategies (see the module docstring)."""

    name = ""
    #: Whether :meth:`collect` makes GL calls.
    needs_gl = True

    def __init__(self) -> None:
        self._readout: FrameReadout | None = None

    def start(self, readout: FrameReadout) -> None:
        self._readout = readout

    def wait(self) -> None:
        """Block until the started reads are in host memory (GL, context current)."""

    def collect(self, confidence_out: np.ndarray | None, category_out: np.ndarray | None) -> None:
        raise NotImplementedError

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

    def collect(self, confidence_out: np.ndarray | None, category_out: np.ndarray | None) -> None:
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


class MappedReadback(Readback):
    """Every read into one persistent mapped buffer, one fence per frame (see the module docstring)."""

    name = "mapped"
    needs_gl = False

    def __init__(self, ctx: moderngl.Context, gl: GLFunctions) -> None:
        super().__init__()
        self._arena = MappedArena(ctx, gl, "read", growth=1.25)
        self._offsets: tuple[int, ...] = ()
        self._ready = False

    def start(self, readout: FrameReadout) -> None:
        self._arena.drop_fence()
        images = [*readout.confidence, *([readout.category] if readout.category else [])]
        offsets, end = [], 0
        for image in images:
            offsets.append(end)
            end += -(-image.nbytes // _ALIGN) * _ALIGN
        self._arena.ensure(end)
        for image, offset in zip(images, offsets, strict=True):
            image.read_into(self._arena.buffer.buffer, offset)
        self._arena.fence()
        self._offsets = tuple(offsets)
        self._ready = False
        super().start(readout)

    def wait(self) -> None:
        if self._arena.wait():
            self._ready = True

    def collect(self, confidence_out: np.ndarray | None, category_out: np.ndarray | None) -> None:
        if not self._ready:
            raise RuntimeError("collect() before wait()")
        readout = self._take(confidence_out, category_out)
        host = self._arena.buffer.host
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        if confidence_out is not None:
            for index, image in enumerate(readout.confidence):
                offset = self._offsets[index]
                plane = host[offset : offset + image.nbytes].view(confidence_out.dtype)
                copies.append((confidence_out[index], plane.reshape(image.height, image.width)))
        if category_out is not None:
            image, offset = readout.category, self._offsets[len(readout.confidence)]
            rows = host[offset : offset + image.nbytes].reshape(image.height, image.width * 4)
            copies.append((category_out, rows[:, : readout.category_width]))
        copy_rows(copies)

    def objects(self) -> int:
        return self._arena.objects()

    def release(self) -> None:
        self._arena.release()
        super().release()

    def abandon(self) -> None:
        self._arena.abandon()
        super().abandon()
