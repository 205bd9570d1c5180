"""Uploading a frame's tensor into its texture: ``"direct"`` or ``"mapped"``.

* :class:`DirectUpload` (``"direct"``): ``glTexSubImage2D`` from the caller's array when the
  layout matches it (C of 1, 2 or a multiple of 4, unwrapped), else from a padded host staging
  copy. On llvmpipe this is one or two ``memcpy`` and the fastest there is.
* :class:`MappedUpload` (``"mapped"``): the tensor is copied once into a persistently mapped
  write buffer, already in the texture's layout (the padding happens in that one copy, no
  separate staging array), and the texture is filled from that buffer (a pixel unpack buffer:
  a DMA on a discrete GPU, no pageable-memory stall). A fence after each upload guards the buffer
  against being overwritten while the GPU still reads it.
"""

from __future__ import annotations

import numpy as np

from .plan import TensorLayout
from .rawgl import GLFunctions, PersistentBuffer
from .slots import TensorSlot

__all__ = ["DirectUpload", "MappedUpload", "Upload"]

_GRANULE = 1 << 20


class Upload:
    """Interface of the strategies."""

    name = ""

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

    def __init__(self, ctx, gl: GLFunctions) -> None:
        self.ctx = ctx
        self.gl = gl
        self._buffer: PersistentBuffer | None = None
        self._fence: int | None = None
        self._layout: TensorLayout | None = None  # the layout whose padding the buffer holds

    def upload(self, slot: TensorSlot, tensor: np.ndarray) -> None:
        layout = slot.layout
        size = layout.texels * layout.lanes * 4
        fence, self._fence = self._fence, None
        if fence is not None:
            self.gl.wait(fence)  # the previous upload has left the buffer
        if self._buffer is None or self._buffer.size < size:
            self._release_buffer()
            self._buffer = PersistentBuffer(self.ctx, self.gl, -(-size // _GRANULE) * _GRANULE, "write")
            self._layout = None
        floats = self._buffer.host[:size].view(np.float32)
        if not layout.padded:
            np.copyto(floats.reshape(tensor.shape), tensor)
        else:
            if self._layout != layout:
                floats[...] = 0.0
            layout.padded_view(floats)[...] = tensor
        self._layout = layout
        slot.texture.write(self._buffer.buffer)
        self._fence = self.gl.fence()

    def _release_buffer(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            buffer.release()

    def objects(self) -> int:
        return int(self._buffer is not None)

    def release(self) -> None:
        fence, self._fence = self._fence, None
        self.gl.delete(fence)
        self._release_buffer()
        self._layout = None

    def abandon(self) -> None:
        self._fence = None
        self._buffer = None
        self._layout = None
