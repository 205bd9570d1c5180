"""GL sessions: a generation's use of one GL context. The only module that creates, attaches,
checks and destroys contexts.

A session is the moderngl context (``mgl``) plus how frames run on it (thread, make-current,
health check). Two kinds, one interface (:class:`GLSession`):

* :class:`OwnedSession`: a headless EGL context that gpu_seg creates (through
  :mod:`gpu_seg.gl.egl`, with ``LOSE_CONTEXT_ON_RESET`` reset notification where the driver
  offers it) and keeps on its own thread (:mod:`gpu_seg.gl.worker`). After a loss, the owner
  creates a new one: a new *generation*.
* :class:`AttachedSession`: a context that the application owns (a glfw or Qt window, ...). GL
  work runs on the caller's thread, which must have that context current. gpu_seg cannot
  recreate it: after a loss it reports the loss and waits for the application to attach a new
  one.

:meth:`GLSession.run` brackets every frame: it makes the context current, runs the frame, and
checks the context before any result is trusted. Signals of a loss, cheapest first:

* owned: ``eglMakeCurrent`` fails (destroyed or lost context), ``eglQueryContext`` fails (destroyed
  while current), the context is no longer current, ``glGetError`` returns ``GL_CONTEXT_LOST``,
  ``glGetGraphicsResetStatus`` is not ``GL_NO_ERROR`` (polled at most every
  ``reset_poll_interval`` seconds, as Chromium does; robust contexts only);
* attached: the native current context (GLX or EGL) is not the one attached, the moderngl
  context was released, or ``glGetError`` reports the loss;
* a frame that times out on the GL thread (a hung driver).

Any of these raises :class:`~gpu_seg.errors.ContextLostError`; the frame's data are discarded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import moderngl

from ..errors import ContextLostError, GLUnavailableError, GpuSegError
from . import egl
from .worker import GLThread

__all__ = ["AttachedSession", "ContextInfo", "GLError", "GLSession", "OwnedSession", "native_current_context"]

log = logging.getLogger("gpu_seg")
T = TypeVar("T")

GL_NO_ERROR = 0
GL_CONTEXT_LOST = 0x0507
_RESET_NAMES = {
    0x8253: "GL_GUILTY_CONTEXT_RESET",
    0x8254: "GL_INNOCENT_CONTEXT_RESET",
    0x8255: "GL_UNKNOWN_CONTEXT_RESET",
}


class GLError(GpuSegError, RuntimeError):
    """A GL call failed on a healthy context (for example ``GL_OUT_OF_MEMORY``)."""


@dataclass(frozen=True)
class ContextInfo:
    """What a context is, for logs, ``gpu-seg info`` and benchmark metadata."""

    kind: str
    renderer: str
    vendor: str
    version: str
    version_code: int
    glsl_version: int
    robust: bool
    reset_notification: bool
    max_texture_size: int


def _glsl_version(version_code: int) -> int:
    return 400 if version_code >= 400 else 330


def _describe(kind: str, ctx: moderngl.Context, robust: bool, reset_notification: bool) -> ContextInfo:
    info = ctx.info
    return ContextInfo(
        kind=kind,
        renderer=str(info.get("GL_RENDERER", "")),
        vendor=str(info.get("GL_VENDOR", "")),
        version=str(info.get("GL_VERSION", "")),
        version_code=ctx.version_code,
        glsl_version=_glsl_version(ctx.version_code),
        robust=robust,
        reset_notification=reset_notification,
        max_texture_size=int(info.get("GL_MAX_TEXTURE_SIZE", 0)),
    )


class GLSession:
    """Interface of both context kinds. ``generation`` numbers the contexts of one processor."""

    generation: int
    mgl: moderngl.Context
    info: ContextInfo
    owned: bool

    def run(self, frame: Callable[[], T]) -> T:
        """Run ``frame`` with the context current; raise ContextLostError if it was lost."""
        raise NotImplementedError

    def check(self) -> str | None:
        """Loss reason, or None while healthy (call with the context current, inside :meth:`run`)."""
        raise NotImplementedError

    def close(self, release: Callable[[], None] | None = None) -> None:
        """Release a healthy context, calling ``release`` first with it current."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Drop a lost context without GL calls on its objects."""
        raise NotImplementedError


class OwnedSession(GLSession):
    """A headless EGL context created and owned by gpu_seg, living on its own thread.

    Use :meth:`create`. ``timeout`` bounds each frame (seconds, None = unbounded).
    """

    owned = True

    def __init__(
        self,
        generation: int,
        thread: GLThread,
        egl_context: egl.EGLContext,
        ctx: moderngl.Context,
        timeout: float | None,
        reset_poll_interval: float,
        owns_thread: bool = True,
    ) -> None:
        self.generation = generation
        self.thread = thread
        self.owns_thread = owns_thread
        self.egl_context = egl_context
        self.mgl = ctx
        self.timeout = timeout
        self.reset_poll_interval = reset_poll_interval
        self._last_reset_poll = float("-inf")
        self._dead = False
        self.info = _describe("owned-egl", ctx, egl_context.robust, egl_context.reset_notification)

    @classmethod
    def create(
        cls,
        generation: int,
        device_index: int | None = None,
        robust: bool = True,
        timeout: float | None = 60.0,
        reset_poll_interval: float = 0.005,
        thread: GLThread | None = None,
    ) -> OwnedSession:
        """Create the context on ``thread`` (a healthy GL thread kept across generations), or on a
        new thread that the context owns and stops on close.

        Raises:
            GLUnavailableError: EGL or a suitable OpenGL context is not available.
        """
        owns_thread = thread is None
        if thread is None:
            thread = GLThread(f"gpu_seg-gl-{generation}")

        def build() -> OwnedSession:
            display = egl.open_display(device_index)
            egl_context = egl.create_context(display, robust=robust)
            try:
                egl_context.make_current()
                ctx = moderngl.create_context(standalone=True, require=330, context=egl_context.loader())
                # ctx.info is read (and cached by moderngl) here, with the context current.
                owned = cls(generation, thread, egl_context, ctx, timeout, reset_poll_interval, owns_thread)
            except BaseException:
                egl_context.destroy()
                raise
            finally:
                egl_context.release_current()
            return owned

        try:
            return thread.call(build, timeout)
        except (egl.EGLError, OSError, moderngl.Error, ValueError) as exc:
            if owns_thread:
                thread.stop()
            raise GLUnavailableError(f"cannot create an EGL OpenGL context: {exc}") from exc

    def check(self) -> str | None:
        egl_context = self.egl_context
        if not egl_context.is_valid():
            return "the EGL context was destroyed"
        if not egl_context.is_current():
            return "the EGL context is no longer current"
        error = egl_context.gl_error()
        if error == GL_CONTEXT_LOST:
            return "glGetError returned GL_CONTEXT_LOST"
        if error != GL_NO_ERROR:
            raise GLError(f"GL error 0x{error:04x} during the frame")
        now = time.monotonic()
        if egl_context.reset_notification and now - self._last_reset_poll >= self.reset_poll_interval:
            self._last_reset_poll = now
            status = egl_context.graphics_reset_status()
            if status != GL_NO_ERROR:
                return f"glGetGraphicsResetStatus returned {_RESET_NAMES.get(status, hex(status))}"
        return None

    def run(self, frame: Callable[[], T]) -> T:
        if self._dead:
            raise ContextLostError("the context was lost", reason="lost earlier")

        def bracketed() -> T:
            try:
                self.egl_context.make_current()
            except egl.EGLError as exc:
                raise ContextLostError(f"cannot make the context current: {exc}", reason=str(exc)) from exc
            try:
                try:
                    result = frame()
                except moderngl.Error as exc:
                    reason = self.check()
                    if reason:
                        raise ContextLostError(
                            f"GL failed on a lost context: {reason}", reason=reason
                        ) from exc
                    raise GLError(f"GL call failed on a healthy context: {exc}") from exc
                reason = self.check()
                if reason:
                    raise ContextLostError(f"context lost during the frame: {reason}", reason=reason)
                return result
            finally:
                self.egl_context.release_current()

        try:
            return self.thread.call(bracketed, self.timeout)
        except ContextLostError:
            self._dead = True
            raise

    def close(self, release: Callable[[], None] | None = None) -> None:
        def teardown() -> None:
            try:
                self.egl_context.make_current()
                if release is not None:
                    release()
                self.mgl.release()  # destroys the EGL context through the loader
            except (egl.EGLError, moderngl.Error):
                self.egl_context.destroy()

        try:
            self.thread.call(teardown, self.timeout)
        except ContextLostError:
            pass
        finally:
            if self.owns_thread:
                self.thread.stop()

    def abandon(self) -> None:
        self._dead = True

        def drop() -> None:
            self.egl_context.release_current()
            self.egl_context.destroy()  # an EGL call, not GL: frees the driver's side

        try:
            self.thread.call(drop, 5.0)
        except Exception as exc:  # a hung or broken driver: leave the thread behind
            log.debug("abandoning generation %d: %s", self.generation, exc)
        finally:
            if self.owns_thread:
                self.thread.stop(timeout=1.0)

    def destroy_for_testing(self) -> None:
        """Destroy the EGL context the way a driver reset would leave it: gone, handles dangling."""

        def destroy() -> None:
            self.egl_context.release_current()
            egl.library().eglDestroyContext(self.egl_context.display.handle, self.egl_context.handle)

        self.thread.call(destroy, self.timeout)


# ------------------------------------------------------------------------------ attached contexts
_native_lock = threading.Lock()
_native_getters: list[tuple[str, Callable[[], int]]] | None = None


def _load_native_getters() -> list[tuple[str, Callable[[], int]]]:
    getters: list[tuple[str, Callable[[], int]]] = []
    for api, names, symbol in (
        ("glx", ("libGLX.so.0", "libGL.so.1"), "glXGetCurrentContext"),
        ("egl", ("libEGL.so.1",), "eglGetCurrentContext"),
    ):
        for name in names:
            try:
                function = getattr(ctypes.CDLL(name), symbol)
            except (OSError, AttributeError):
                continue
            function.restype = ctypes.c_void_p
            function.argtypes = []
            getters.append((api, lambda f=function: int(f() or 0)))
            break
    return getters


def native_current_context() -> tuple[str, int] | None:
    """``(api, handle)`` of the GLX or EGL context current on this thread, or None."""
    global _native_getters
    with _native_lock:
        if _native_getters is None:
            _native_getters = _load_native_getters()
    for api, getter in _native_getters:
        handle = getter()
        if handle:
            return api, handle
    return None


class AttachedSession(GLSession):
    """A context the application owns; gpu_seg renders into its own framebuffers there.

    The application makes its context current on its thread before calling ``process()``;
    gpu_seg does not change which context is current. If the application destroys the context
    (closes its window) or it is lost, frames raise ContextLostError (or fall back to the CPU)
    until the application attaches a new context.
    """

    owned = False

    def __init__(self, generation: int, ctx: moderngl.Context | None = None) -> None:
        native = native_current_context()
        if native is None:
            raise GLUnavailableError("no OpenGL context is current on this thread to attach to")
        try:
            self.mgl = ctx if ctx is not None else moderngl.create_context(require=330)
        except Exception as exc:
            raise GLUnavailableError(f"cannot attach to the current OpenGL context: {exc}") from exc
        if self.mgl.version_code < 330:
            raise GLUnavailableError(f"OpenGL {self.mgl.version_code} is too old; 3.3 core is needed")
        self.generation = generation
        self.native = native
        self.thread_id = threading.get_ident()
        self._dead = False
        self.info = _describe(f"attached-{native[0]}", self.mgl, False, False)

    def check(self) -> str | None:
        native = native_current_context()
        if native != self.native:
            return "the application's context is no longer current (destroyed or switched)"
        if self.mgl.error == "GL_CONTEXT_LOST":
            return "glGetError returned GL_CONTEXT_LOST"
        return None

    def run(self, frame: Callable[[], T]) -> T:
        if self._dead:
            raise ContextLostError("the attached context was lost; attach a new one", reason="lost earlier")
        if threading.get_ident() != self.thread_id:
            raise GpuSegError(
                "an attached context is used on the thread that attached it; "
                "call process() from the application's GL thread"
            )
        reason = self.check()
        if reason:
            self._dead = True
            raise ContextLostError(f"attached context lost: {reason}", reason=reason)
        try:
            result = frame()
        except moderngl.Error as exc:
            reason = self.check()
            if reason:
                self._dead = True
                raise ContextLostError(f"GL failed on a lost context: {reason}", reason=reason) from exc
            raise GLError(f"GL call failed on a healthy context: {exc}") from exc
        reason = self.check()
        if reason is None:
            error = self.mgl.error
            if error != "GL_NO_ERROR":
                raise GLError(f"{error} during the frame")
            return result
        self._dead = True
        raise ContextLostError(f"attached context lost during the frame: {reason}", reason=reason)

    def close(self, release: Callable[[], None] | None = None) -> None:
        if release is not None and not self._dead and native_current_context() == self.native:
            release()

    def abandon(self) -> None:
        self._dead = True
