"""Deletes through a context that is gone do nothing: the GL functions that delete objects, as the
moderngl context of an owned EGL context calls them.

GL calls go to the calling thread's *current* context, and object names start at 1 in every
context. A moderngl object outlives its context: an application's input made in ``pp.run_gl`` and
held across a context loss, ``trim(release_context=True)`` or an idle release. Releasing it (inside
``run_gl``, as documented) then deleted the new context's object of the same name, one of
gpu_seg's own buffers or textures: GL errors, wrong masks, a segfault on a mapped buffer.

So :class:`~gpu_seg.gl.egl.contexts.EGLLoader` hands moderngl, for each delete function, a
trampoline of its own context (:class:`DeleteGuard`), which calls the driver only while that
context is alive (not destroyed, disowned or retired) and current on the calling thread. Anywhere
else the delete does nothing: the object went with its context, or goes with it. Deletes are rare
(a release, a trim, a pool eviction), so the Python call each one costs does not show in frames.
Other uses of such an object (a write, a read) still reach whatever context is current: objects of
an ended generation must not be used (``buffer.ctx is ctx`` inside ``run_gl`` tells a live one).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["GUARDED", "DeleteGuard"]

_NAMES = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)  # (GLsizei n, const GLuint *names)
_NAME = ctypes.CFUNCTYPE(None, ctypes.c_uint)  # (GLuint name)
_SYNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # (GLsync sync)

#: The delete functions moderngl may call, and their C prototypes.
GUARDED = {
    "glDeleteBuffers": _NAMES,
    "glDeleteFramebuffers": _NAMES,
    "glDeleteQueries": _NAMES,
    "glDeleteRenderbuffers": _NAMES,
    "glDeleteSamplers": _NAMES,
    "glDeleteTextures": _NAMES,
    "glDeleteTransformFeedbacks": _NAMES,
    "glDeleteVertexArrays": _NAMES,
    "glDeleteProgram": _NAME,
    "glDeleteShader": _NAME,
    "glDeleteSync": _SYNC,
}


class DeleteGuard:
    """The guarded delete functions of one context (see the module docstring).

    ``usable()`` says whether a delete may reach the driver now; the trampolines live as long as
    the guard, which the loader (held by moderngl's context, which every object of it holds) keeps.
    """

    def __init__(self, usable: Callable[[], bool]) -> None:
        self._usable = usable
        self._trampolines: dict[str, ctypes._CFuncPtr] = {}
        #: The trampolines' addresses as handed out (moderngl keeps a reference to each: see
        #: :func:`gpu_seg.gl.moderngl_refs.give_back_addresses`).
        self.addresses: list[int] = []

    def address(self, name: str, real: int) -> int | None:
        """The address moderngl gets for ``name``: a trampoline to ``real`` for a delete function,
        None for any other function (or an unknown one: ``real`` 0)."""
        prototype = GUARDED.get(name)
        if prototype is None or not real:
            return None
        trampoline = self._trampolines.get(name)
        if trampoline is None:
            # The trampoline must not refer to the guard: ctypes does not let the cycle collector
            # see through a callback, so guard -> trampoline -> guard would never be freed.
            usable, target = self._usable, prototype(real)

            def guarded(*args: object) -> None:
                if usable():
                    target(*args)

            trampoline = self._trampolines[name] = prototype(guarded)
        # The function pointer's value, read where the trampoline keeps it (ctypes.cast would tie
        # the trampoline and its result together in a reference cycle that is never freed).
        address = ctypes.c_void_p.from_address(ctypes.addressof(trampoline)).value
        self.addresses.append(address)
        return address
