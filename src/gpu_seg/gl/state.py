"""The GL state gpu_seg's passes depend on, set before they run.

GL state belongs to the context and persists between calls. Code other than gpu_seg's runs on
gpu_seg's contexts (a function given to ``run_gl``), and gpu_seg runs on an application's context
(attached mode), so state set there reached gpu_seg's passes: blending or face culling made masks
silently wrong; pixel-store parameters (``GL_PACK_SKIP_PIXELS``...) made a readback write past the
end of its array (heap corruption); a bound pixel buffer made every frame fail. :func:`reset_state`
sets every piece of state that changes what gpu_seg's draws, uploads and reads compute to GL's
default, on the current context:

* off: blending, face culling, depth, stencil and scissor tests, logic op, rasterizer discard,
  alpha-to-coverage, sample coverage and the sample mask;
* polygons filled; every color channel written; ``GL_CLAMP_READ_COLOR`` fixed-point only (float
  reads unclamped);
* pixel store (pack and unpack): row length, image height, skipped rows, pixels and images 0, no
  byte swapping, ``LSB_FIRST`` off (moderngl sets the alignment of each transfer itself);
* no pixel pack/unpack buffer bound; no sampler object bound to texture units 0-15 (gpu_seg binds
  its own where it uses one).

It runs at the start of every frame on an attached context (about 40 GL calls, no query) and after
each ``run_gl`` function on an owned one (nothing else touches an owned context). gpu_seg does not
restore an application's state afterwards: see the README (attached contexts).
"""

from __future__ import annotations

import ctypes
import functools

from . import rawgl
from .constants import (
    GL_BLEND,
    GL_CLAMP_READ_COLOR,
    GL_COLOR_LOGIC_OP,
    GL_CULL_FACE,
    GL_DEPTH_TEST,
    GL_FILL,
    GL_FIXED_ONLY,
    GL_FRONT_AND_BACK,
    GL_PACK_IMAGE_HEIGHT,
    GL_PACK_LSB_FIRST,
    GL_PACK_ROW_LENGTH,
    GL_PACK_SKIP_IMAGES,
    GL_PACK_SKIP_PIXELS,
    GL_PACK_SKIP_ROWS,
    GL_PACK_SWAP_BYTES,
    GL_PIXEL_PACK_BUFFER,
    GL_PIXEL_UNPACK_BUFFER,
    GL_RASTERIZER_DISCARD,
    GL_SAMPLE_ALPHA_TO_COVERAGE,
    GL_SAMPLE_COVERAGE,
    GL_SAMPLE_MASK,
    GL_SCISSOR_TEST,
    GL_STENCIL_TEST,
    GL_UNPACK_IMAGE_HEIGHT,
    GL_UNPACK_LSB_FIRST,
    GL_UNPACK_ROW_LENGTH,
    GL_UNPACK_SKIP_IMAGES,
    GL_UNPACK_SKIP_PIXELS,
    GL_UNPACK_SKIP_ROWS,
    GL_UNPACK_SWAP_BYTES,
)

__all__ = ["reset_state"]

_DISABLED = (
    GL_BLEND, GL_CULL_FACE, GL_DEPTH_TEST, GL_STENCIL_TEST, GL_SCISSOR_TEST, GL_COLOR_LOGIC_OP,
    GL_RASTERIZER_DISCARD, GL_SAMPLE_ALPHA_TO_COVERAGE, GL_SAMPLE_COVERAGE, GL_SAMPLE_MASK,
)  # fmt: skip
_PIXEL_STORE_ZERO = (
    GL_PACK_SWAP_BYTES, GL_PACK_LSB_FIRST, GL_PACK_ROW_LENGTH, GL_PACK_SKIP_ROWS, GL_PACK_SKIP_PIXELS,
    GL_PACK_SKIP_IMAGES, GL_PACK_IMAGE_HEIGHT, GL_UNPACK_SWAP_BYTES, GL_UNPACK_LSB_FIRST,
    GL_UNPACK_ROW_LENGTH, GL_UNPACK_SKIP_ROWS, GL_UNPACK_SKIP_PIXELS, GL_UNPACK_SKIP_IMAGES,
    GL_UNPACK_IMAGE_HEIGHT,
)  # fmt: skip
_SAMPLER_UNITS = 16

_u = ctypes.c_uint
_PROTOTYPES = {
    "glDisable": ctypes.CFUNCTYPE(None, _u),
    "glPixelStorei": ctypes.CFUNCTYPE(None, _u, ctypes.c_int),
    "glPolygonMode": ctypes.CFUNCTYPE(None, _u, _u),
    "glColorMask": ctypes.CFUNCTYPE(None, ctypes.c_ubyte, ctypes.c_ubyte, ctypes.c_ubyte, ctypes.c_ubyte),
    "glClampColor": ctypes.CFUNCTYPE(None, _u, _u),
    "glBindBuffer": ctypes.CFUNCTYPE(None, _u, _u),
    "glBindSampler": ctypes.CFUNCTYPE(None, _u, _u),
}


@functools.cache
def _functions() -> dict[str, ctypes._CFuncPtr]:
    """The entry points (``eglGetProcAddress`` / ``glXGetProcAddressARB``: the same for every context
    of the process); those the library does not know are left out."""
    functions = {}
    for name, prototype in _PROTOTYPES.items():
        address = rawgl.resolve(name)
        if address:
            functions[name] = prototype(address)
    return functions


def reset_state() -> None:
    """Set the state listed in the module docstring to GL's defaults on the current context."""
    gl = _functions()
    disable = gl.get("glDisable")
    if disable is not None:
        for capability in _DISABLED:
            disable(capability)
    store = gl.get("glPixelStorei")
    if store is not None:
        for parameter in _PIXEL_STORE_ZERO:
            store(parameter, 0)
    if "glPolygonMode" in gl:
        gl["glPolygonMode"](GL_FRONT_AND_BACK, GL_FILL)
    if "glColorMask" in gl:
        gl["glColorMask"](1, 1, 1, 1)
    if "glClampColor" in gl:
        gl["glClampColor"](GL_CLAMP_READ_COLOR, GL_FIXED_ONLY)
    if "glBindBuffer" in gl:
        gl["glBindBuffer"](GL_PIXEL_PACK_BUFFER, 0)
        gl["glBindBuffer"](GL_PIXEL_UNPACK_BUFFER, 0)
    if "glBindSampler" in gl:
        for unit in range(_SAMPLER_UNITS):
            gl["glBindSampler"](unit, 0)
