"""Headless EGL contexts owned by gpu_seg, through ctypes (no compiled code).

Why not glcontext: its EGL backend creates contexts without robustness attributes and ignores
``eglMakeCurrent`` failures, so a lost or destroyed context goes unnoticed. This package creates
the EGL context itself, asks for ``LOSE_CONTEXT_ON_RESET`` reset notification where the driver
offers it, checks every ``eglMakeCurrent``, checks the context's identity and health after GL
work, and hands moderngl a loader object::

    display = open_display()
    egl_context = create_context(display)
    egl_context.make_current()               # moderngl issues GL calls while it wraps the loader
    mgl = moderngl.create_context(standalone=True, require=330, context=egl_context.loader())
    health = ContextHealth(egl_context)      # with the EGL context current
    ...                                      # GL work
    assert health.lost_reason() is None      # before trusting a readback
    mgl.release()                            # destroys the EGL context too

Modules, by what they own:

* :mod:`.bindings`: libEGL with a declared prototype for every entry point, EGL constants,
  :class:`EGLError`, the prototypes of the GL functions called outside moderngl.
* :mod:`.devices`: EGL devices and the process-wide displays (never terminated), ``egl_info``.
* :mod:`.contexts`: :class:`EGLContext` (make current, release, destroy, disown), the moderngl
  loader, :func:`preserve_current`; the measured behaviour of destroyed contexts.
* :mod:`.creation`: :func:`create_context` with robustness attributes.
* :mod:`.health`: :class:`ContextHealth` (identity sentinel, validity, reset status),
  :class:`Sentinel` (context identity, also for attached contexts) and :func:`read_robustness`
  (what the GL driver honours).

GL enum values are in :mod:`gpu_seg.gl.constants`.
"""

from .bindings import ENV_LIBEGL, EGLError, EGLLibrary, egl_error_name, library
from .contexts import EGLContext, EGLLoader, preserve_current
from .creation import create_context
from .devices import ENV_DEVICE, PLATFORMS, DeviceInfo, Display, egl_info, open_display
from .health import ContextHealth, Robustness, Sentinel, labels_available, read_robustness

__all__ = [
    "ENV_DEVICE",
    "ENV_LIBEGL",
    "PLATFORMS",
    "ContextHealth",
    "DeviceInfo",
    "Display",
    "EGLContext",
    "EGLError",
    "EGLLibrary",
    "EGLLoader",
    "Robustness",
    "Sentinel",
    "create_context",
    "egl_error_name",
    "egl_info",
    "labels_available",
    "library",
    "open_display",
    "preserve_current",
    "read_robustness",
]
