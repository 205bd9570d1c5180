"""Uploading a frame's tensor into its texture: ``"direct"`` or ``"mapped"``.

* :class:`DirectUpload` (``"direct"``): ``glTexSubImage2D`` from the caller's array when the
  layout matches it (C of 1, 2 or a multiple of 4, unwrapped), else from a padded host staging
  copy. On llvmpipe this is one or two ``memcpy`` and the fastest there is.
* :class:`MappedUpload` (``"mapped"``): the tensor is copied once into a persistently mapped
  write buffer, already in the texture's layout (a padded layout is padded in that one copy,
  straight into the mapping: measured on an H200, multiclass 0.61 vs 0.79 ms and deeplab 0.77 vs
  1.28 ms against a cached staging array and one contiguous copy), and the texture is filled from
  that buffer (a pixel unpack buffer: a DMA on a discrete GPU, no pageable-memory stall). A fence
  after each upload guards the buffer against being overwritten while the GPU still reads it.
"""

from __future__ import annotations

import moderngl
import numpy as np

from .rawgl import GLFunctions, MappedArena
from .readback import copy_rows
from .slots import TensorSlot

__all__ = ["DirectUpload", "MappedUpload", "Upload"]


class Upload:
    """Interface of the strategies."""

    name = ""
    threads = False  # see MappedUpload.threads (the direct upload has no host copy to split)

    def upload(self, slot: TensorSlot, tensor: np.ndarray) -> None:
        raise NotImplementedError

    def objects(self) -> int:
        """GL objects held."""
        return 0

    def release(self) -> None:
        """Free GL objects (context alive and current)."""

    def abandon(self) -> None:
        """Forget GL objects without GL calls (context lost)."""


class DirectUpload(Upload):
    """``Texture.write`` from the tensor, or from a padded staging copy (see the module docstring)."""

    name = "direct"

    def upload(self, slot: TensorSlot, tensor: np.ndarray) -> None:
        layout = slot.layout
        if not layout.padded:
            slot.texture.write(tensor)
            return
        if slot.staging is None:  # zeros in the padding lanes, written once
            slot.staging = np.zeros(layout.texels * layout.lanes, np.float32)
        layout.padded_view(slot.staging)[...] = tensor
        slot.texture.write(slot.staging)


class MappedUpload(Upload):
    """One copy into a persistent write buffer, then a pixel-unpack upload (see the module docstring)."""

    name = "mapped"

    #: With ``threads``: tensors of at least this many bytes are copied in row bands over a few
    #: threads (:func:`~.readback.copy_rows`), bands of about :data:`THREAD_BAND_BYTES`.
    THREADS_MIN_BYTES = 1 << 20
    THREAD_BAND_BYTES = 256 << 10

    def __init__(self, ctx: moderngl.Context, gl: GLFunctions) -> None:
        self._arena = MappedArena(ctx, gl, "write")
        self._padded: object | None = None  # the layout whose zero padding the mapping holds
        #: Copy large tensors into the mapping over a few threads (a candidate, off until measured
        #: on a GPU: ``GLPipeline.parallel_upload``).
        self.threads = False

    def upload(self, slot: TensorSlot, tensor: np.ndarray) -> None:
        layout = slot.layout
        size = layout.texels * layout.lanes * 4
        self._arena.wait()  # the previous upload has left the buffer
        if self._arena.ensure(size):
            self._padded = None
        floats = self._arena.buffer.host[:size].view(np.float32)
        if not layout.padded:
            target = floats.reshape(tensor.shape)
            self._padded = None
        else:  # padded in place: measured faster than a cached staging copy on an H200 and llvmpipe
            if self._padded != layout:  # zeros in the padding lanes, once per layout
                floats[...] = 0.0
                self._padded = layout
            target = layout.padded_view(floats)
        if self.threads:
            copy_rows([(target, tensor)], self.THREADS_MIN_BYTES, self.THREAD_BAND_BYTES)
        else:
            np.copyto(target, tensor)
        slot.texture.write(self._arena.buffer.buffer)
        self._arena.fence()

    def objects(self) -> int:
        return self._arena.objects()

    def release(self) -> None:
        self._arena.release()
        self._padded = None

    def abandon(self) -> None:
        self._arena.abandon()
        self._padded = None
