"""Creating gpu_seg's EGL contexts: an OpenGL core profile, the highest version offered from the
one asked for down to 3.3, with ``LOSE_CONTEXT_ON_RESET`` reset notification and robust buffer
access requested where the display offers them, surfaceless or on a 1x1 pbuffer.

What EGL accepted is recorded on the :class:`~gpu_seg.gl.egl.contexts.EGLContext`; whether the GL
driver honours it is read back by :func:`~gpu_seg.gl.egl.health.read_robustness`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .bindings import (
    EGL_ALPHA_SIZE,
    EGL_BLUE_SIZE,
    EGL_CONTEXT_FLAGS_KHR,
    EGL_CONTEXT_MAJOR_VERSION,
    EGL_CONTEXT_MINOR_VERSION,
    EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
    EGL_CONTEXT_OPENGL_PROFILE_MASK,
    EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY,
    EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY_EXT,
    EGL_CONTEXT_OPENGL_ROBUST_ACCESS,
    EGL_CONTEXT_OPENGL_ROBUST_ACCESS_BIT_KHR,
    EGL_CONTEXT_OPENGL_ROBUST_ACCESS_EXT,
    EGL_GREEN_SIZE,
    EGL_HEIGHT,
    EGL_LOSE_CONTEXT_ON_RESET,
    EGL_LOSE_CONTEXT_ON_RESET_EXT,
    EGL_NONE,
    EGL_OPENGL_API,
    EGL_OPENGL_BIT,
    EGL_PBUFFER_BIT,
    EGL_RED_SIZE,
    EGL_RENDERABLE_TYPE,
    EGL_SURFACE_TYPE,
    EGL_TRUE,
    EGL_WIDTH,
    EGLError,
    EGLLibrary,
    int_array,
    library,
)
from .contexts import EGLContext
from .devices import Display

__all__ = ["create_context"]


def _version_candidates(gl_version: tuple[int, int]) -> list[tuple[int, int]]:
    """The requested version, then lower 4.x minors, then 3.3 (never below 3.3)."""
    major, minor = gl_version
    if (major, minor) < (3, 3):
        raise ValueError(f"gl_version must be >= (3, 3), got {gl_version}")
    candidates = [(major, minor)]
    if major >= 4:
        candidates += [(4, m) for m in range(min(minor, 10) - 1, -1, -1) if (4, m) < (major, minor)]
    if (3, 3) not in candidates:
        candidates.append((3, 3))
    return candidates


@dataclass(frozen=True)
class _RobustAttempt:
    attributes: tuple[int, ...]
    robust_access: bool
    reset_notification: bool


def _robust_attempts(display: Display, robust: bool) -> list[_RobustAttempt]:
    """Robustness attribute sets to try, most complete first, ending with none."""
    attempts: list[_RobustAttempt] = []
    if robust:
        if display.has_extension("EGL_EXT_create_context_robustness"):
            strategy = (EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY_EXT, EGL_LOSE_CONTEXT_ON_RESET_EXT)
            access = (EGL_CONTEXT_OPENGL_ROBUST_ACCESS_EXT, EGL_TRUE)
            attempts.append(_RobustAttempt(strategy + access, True, True))
            attempts.append(_RobustAttempt(strategy, False, True))
        if display.version >= (1, 5):
            strategy = (EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY, EGL_LOSE_CONTEXT_ON_RESET)
            access = (EGL_CONTEXT_OPENGL_ROBUST_ACCESS, EGL_TRUE)
            attempts.append(_RobustAttempt(strategy + access, True, True))
            attempts.append(_RobustAttempt(strategy, False, True))
        elif display.has_extension("EGL_KHR_create_context"):
            strategy = (EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY, EGL_LOSE_CONTEXT_ON_RESET)
            access = (EGL_CONTEXT_FLAGS_KHR, EGL_CONTEXT_OPENGL_ROBUST_ACCESS_BIT_KHR)
            attempts.append(_RobustAttempt(strategy + access, True, True))
            attempts.append(_RobustAttempt(strategy, False, True))
    attempts.append(_RobustAttempt((), False, False))
    return attempts


def _choose_config(lib: EGLLibrary, display: Display, pbuffer: bool) -> int:
    attributes = [
        EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT,
        EGL_SURFACE_TYPE, EGL_PBUFFER_BIT if pbuffer else 0,
        EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8, EGL_BLUE_SIZE, 8, EGL_ALPHA_SIZE, 8,
        EGL_NONE,
    ]  # fmt: skip
    config = ctypes.c_void_p(0)
    count = ctypes.c_int32(0)
    if not lib.eglChooseConfig(
        display.handle, int_array(attributes), ctypes.byref(config), 1, ctypes.byref(count)
    ):
        raise lib.error("eglChooseConfig")
    if count.value < 1 or not config.value:
        raise EGLError("eglChooseConfig", None, "no OpenGL config" + (" with pbuffer" if pbuffer else ""))
    return int(config.value)


def create_context(
    display: Display,
    *,
    gl_version: tuple[int, int] = (4, 3),
    robust: bool = True,
    surfaceless: bool | None = None,
) -> EGLContext:
    """Create an OpenGL core-profile context on ``display``. It is not made current.

    Versions are tried from ``gl_version`` down (lower 4.x minors, then 3.3). For each version, when
    ``robust`` and the display offers EGL_EXT_create_context_robustness or EGL 1.5 (or
    EGL_KHR_create_context), the context is requested with ``LOSE_CONTEXT_ON_RESET`` reset
    notification plus robust buffer access, then with reset notification alone, then without
    robustness; :attr:`EGLContext.robust_access` and :attr:`EGLContext.reset_notification` record
    what was accepted.

    The context is surfaceless when the display has EGL_KHR_surfaceless_context, otherwise it gets
    a 1x1 pbuffer; render into framebuffer objects either way.

    Args:
        display: from :func:`open_display`.
        gl_version: the preferred (minimum) OpenGL version, at least (3, 3).
        robust: ask for robustness / reset notification.
        surfaceless: ``None`` decides from EGL_KHR_surfaceless_context; ``False`` forces the 1x1
            pbuffer; ``True`` forces surfaceless (EGL_BAD_MATCH at make-current time if unsupported).

    Returns:
        The new context.

    Raises:
        ValueError: ``gl_version`` is below 3.3.
        EGLError: no context could be created.
    """
    candidates = _version_candidates(gl_version)
    lib = library()
    if not lib.eglBindAPI(EGL_OPENGL_API):
        raise lib.error("eglBindAPI", "OpenGL API unsupported")
    if surfaceless is None:
        surfaceless = "EGL_KHR_surfaceless_context" in display.extensions
    pbuffer = not surfaceless
    config = _choose_config(lib, display, pbuffer)
    attempts = _robust_attempts(display, robust)
    failures: list[str] = []
    for major, minor in candidates:
        for attempt in attempts:
            attributes = [
                EGL_CONTEXT_MAJOR_VERSION, major,
                EGL_CONTEXT_MINOR_VERSION, minor,
                EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
                *attempt.attributes,
                EGL_NONE,
            ]  # fmt: skip
            handle = int(lib.eglCreateContext(display.handle, config, None, int_array(attributes)) or 0)
            if not handle:
                error = lib.error("eglCreateContext")
                failures.append(
                    f"GL {major}.{minor} robust_access={attempt.robust_access} "
                    f"reset_notification={attempt.reset_notification}: {error.code_name}"
                )
                continue
            surface = 0
            if pbuffer:
                surface_attributes = int_array([EGL_WIDTH, 1, EGL_HEIGHT, 1, EGL_NONE])
                surface = int(lib.eglCreatePbufferSurface(display.handle, config, surface_attributes) or 0)
                if not surface:
                    error = lib.error("eglCreatePbufferSurface")
                    lib.eglDestroyContext(display.handle, handle)
                    raise error
            return EGLContext(
                display,
                handle,
                config,
                surface,
                (major, minor),
                attempt.robust_access,
                attempt.reset_notification,
                tuple(attributes),
            )
    raise EGLError("eglCreateContext", None, "; ".join(failures))
