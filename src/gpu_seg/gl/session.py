"""GL sessions: a generation's use of one GL context. The only module that creates, attaches,
checks and destroys contexts.

Words: the *EGL context* is the raw ``EGLContext`` (:class:`~gpu_seg.gl.egl.EGLContext`); the
*moderngl context* (``mgl``) is moderngl's wrapper of whichever GL context is used; a *session*
is one generation's use of a context: the moderngl context plus how frames run on it (thread,
make-current, health check). Two kinds, one interface (:class:`GLSession`):

* :class:`OwnedSession`: a headless EGL context that gpu_seg creates (through
  :mod:`gpu_seg.gl.egl`, with ``LOSE_CONTEXT_ON_RESET`` reset notification where the driver
  offers it) and keeps on its own thread (:mod:`gpu_seg.gl.worker`). After a loss, the owner
  creates a new session: a new *generation*.
* :class:`AttachedSession`: a context that the application owns (a glfw or Qt window, ...). GL
  work runs on the caller's thread, which must have that context current. gpu_seg cannot
  recreate it: after a loss it reports the loss and waits for the application to attach a new
  one.

:meth:`GLSession.run` brackets every frame: it makes the context current, runs the frame, and
checks the context before any result is trusted. Signals of a loss, cheapest first:

* owned (:class:`~gpu_seg.gl.egl.ContextHealth`): ``eglMakeCurrent`` fails (destroyed or lost
  context), ``eglQueryContext`` fails (destroyed while current), the context is no longer
  current, the current context does not hold the session's sentinel object (the handle was
  recycled for another context, as the NVIDIA driver does), ``glGetGraphicsResetStatus`` is not
  ``GL_NO_ERROR`` (polled at most every ``reset_poll_interval`` seconds, as Chromium does; only
  where the driver honours reset notification), ``glGetError`` returns ``GL_CONTEXT_LOST``;
* attached: the native current context (GLX or EGL) is not the one attached, the current
  context does not hold the session's sentinel object (a recycled handle, or a reset), or
  ``glGetError`` returns ``GL_CONTEXT_LOST``;
* a frame that times out on the GL thread (a hung driver).

Any of these raises :class:`~gpu_seg.errors.ContextLostError`; the frame's data are discarded.
Any other GL error is read once per frame, after it, and raised as :class:`GLError`.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import moderngl

from .. import forks
from ..errors import ContextLostError, GLError, GLUnavailableError, GpuSegError
from . import egl, moderngl_refs, rawgl
from .egl.bindings import CurrentContextGL
from .memory import query_gpu_memory
from .state import reset_state
from .worker import GLThread, raised_on_gl_thread

__all__ = [
    "AttachedSession",
    "ContextInfo",
    "GLError",
    "GLSession",
    "OwnedSession",
    "driver_failure",
    "native_current_context",
    "released",
]

log = logging.getLogger("gpu_seg")
T = TypeVar("T")


def driver_failure(exc: BaseException) -> bool:
    """Whether ``exc``, met while a generation was released or abandoned, is a dying driver's: any
    exception raised on a GL thread, and gpu_seg's and moderngl's own. Anything else was raised in
    the waiting caller, by a signal handler (a request timeout: any type, ``TimeoutError`` say),
    and goes on to the caller."""
    return raised_on_gl_thread(exc) or isinstance(exc, (GpuSegError, moderngl.Error))


def released(obj: object) -> bool:
    """Whether a moderngl object or context was released (its ``mglo`` is moderngl's ``InvalidObject``)."""
    return type(getattr(obj, "mglo", None)).__name__ == "InvalidObject"


def _frame_error(error: str) -> str | None:
    """The error flag read after a frame (moderngl's name): a loss reason, None, or GLError."""
    if error == "GL_CONTEXT_LOST":
        return "glGetError returned GL_CONTEXT_LOST"
    if error != "GL_NO_ERROR":
        raise GLError(f"{error} during the frame")
    return None


@dataclass(frozen=True)
class ContextInfo:
    """What a session's context is, for logs, ``gpu-seg info`` and benchmark metadata.

    Robustness is reported as the GL driver honours it (read back from GL), not as it was asked
    for: EGL can accept an attribute that GL then ignores.

    Attributes:
        kind: ``"owned-egl"``, ``"attached-glx"`` or ``"attached-egl"``.
        renderer, vendor, version: ``GL_RENDERER``, ``GL_VENDOR``, ``GL_VERSION``.
        version_code: ``major * 100 + minor * 10``.
        glsl_version: the ``#version`` gpu_seg's shaders use (330 or 400).
        robust: the driver honours some robustness: reset notification or robust access.
        reset_notification: the driver honours ``LOSE_CONTEXT_ON_RESET``
            (``GL_RESET_NOTIFICATION_STRATEGY`` reads back ``GL_LOSE_CONTEXT_ON_RESET``).
        robust_access: the driver honours robust buffer access (``GL_CONTEXT_FLAGS`` has
            ``GL_CONTEXT_FLAG_ROBUST_ACCESS_BIT``).
        requested_reset_notification: gpu_seg asked for it and ``eglCreateContext`` accepted it
            (False for attached contexts, which gpu_seg did not create).
        requested_robust_access: likewise for robust buffer access.
        max_texture_size: ``GL_MAX_TEXTURE_SIZE``.
    """

    kind: str
    renderer: str
    vendor: str
    version: str
    version_code: int
    glsl_version: int
    robust: bool
    reset_notification: bool
    robust_access: bool
    requested_reset_notification: bool
    requested_robust_access: bool
    max_texture_size: int


_NOT_REQUESTED = egl.Robustness(reset_notification=False, robust_access=False)


def _glsl_version(version_code: int) -> int:
    return 400 if version_code >= 400 else 330


def _describe(
    kind: str,
    mgl: moderngl.Context,
    honoured: egl.Robustness,
    requested: egl.Robustness = _NOT_REQUESTED,
) -> ContextInfo:
    info = mgl.info
    return ContextInfo(
        kind=kind,
        renderer=str(info.get("GL_RENDERER", "")),
        vendor=str(info.get("GL_VENDOR", "")),
        version=str(info.get("GL_VERSION", "")),
        version_code=mgl.version_code,
        glsl_version=_glsl_version(mgl.version_code),
        robust=honoured.reset_notification or honoured.robust_access,
        reset_notification=honoured.reset_notification,
        robust_access=honoured.robust_access,
        requested_reset_notification=requested.reset_notification,
        requested_robust_access=requested.robust_access,
        max_texture_size=int(info.get("GL_MAX_TEXTURE_SIZE", 0)),
    )


class GLSession:
    """Interface of both session kinds. ``generation`` numbers the sessions of one processor."""

    generation: int
    mgl: moderngl.Context
    info: ContextInfo
    owned: bool

    def run(self, frame: Callable[[], T]) -> T:
        """Run ``frame`` with the context current; raise ContextLostError if it was lost."""
        raise NotImplementedError

    @property
    def lost(self) -> bool:
        """Whether this session was found lost or abandoned (its GL objects are dead handles)."""
        return bool(getattr(self, "_dead", False))

    @property
    def strict_identity(self) -> bool:
        """Whether only objects made through ``mgl`` itself belong to this session's context (an
        owned context; an application's named by ``context=ctx``). Otherwise objects of other
        moderngl wrappers of the current context are the application's too (checked on GL)."""
        return True

    def check(self) -> str | None:
        """Loss reason, or None while healthy (call with the context current, inside :meth:`run`).

        Reads the GL error flag: ``GL_CONTEXT_LOST`` is a loss, any other error raises GLError.
        """
        raise NotImplementedError

    def close(self, release: Callable[[], None] | None = None) -> None:
        """End a healthy session: call ``release`` (gpu_seg's GL objects) with the context current,
        then destroy the EGL context if the session owns it."""
        raise NotImplementedError

    def abandon(self, release: Callable[[], None] | None = None, wait: bool = True) -> None:
        """End a lost session without GL calls on its objects (an owned EGL context is destroyed
        through EGL unless its handle was found recycled). ``wait=False``: an owned session's
        GL thread is handed the work and not waited for (after an interrupt).

        ``release`` (gpu_seg's releases of the generation's objects) is run on an owned session's
        thread once no context is current there: every GL call then lands in libglvnd's no-op
        stubs (see :mod:`gpu_seg.gl.egl.contexts`), and only the host side goes. moderngl objects
        keep their moderngl context until released, so without it every lost generation kept its
        moderngl context and gpu_seg's EGL wrappers for good. An attached session runs it on the
        calling thread, and only where no GLX or EGL context is current there (a window's context
        goes with its window): GL calls would reach whatever context the application has current.
        Either kind skips it where GL calls without a context may reach a driver
        (:func:`~gpu_seg.gl.rawgl.calls_without_context_do_nothing`): the objects are forgotten.
        """
        raise NotImplementedError

    def lend_anchor(self) -> object:
        """What lent views must keep alive for their memory to stay mapped (None: nothing, the
        application keeps its context alive while it holds views)."""
        return None

    def forget_after_fork(self) -> None:
        """In a forked child: end the session without any GL or EGL call (the context and its
        objects are the parent's, which still uses them; the GL thread is gone)."""
        self._dead = True

    def keep_objects(self) -> bool:
        """Make the session's GL objects (and the host memory of persistently mapped buffers)
        outlive its context until the session ends, so that views lent out of that memory stay
        valid even if the context is destroyed meanwhile. Returns whether that is ensured.

        An attached context belongs to the application, which must keep it alive while it holds
        views: returns True. An owned one gets a keeper context in its share group, made once.
        """
        return True


class OwnedSession(GLSession):
    """A session on a headless EGL context that gpu_seg creates and owns, on its own thread.

    Use :meth:`create`. ``timeout`` bounds each frame (seconds, None = unbounded).

    Attributes:
        egl_context: the EGL context.
        health: its health check (identity sentinel, validity, reset status).
        thread: the GL thread the EGL context is current on during frames.
    """

    owned = True

    def __init__(
        self,
        generation: int,
        thread: GLThread,
        egl_context: egl.EGLContext,
        mgl: moderngl.Context,
        health: egl.ContextHealth,
        timeout: float | None,
        owns_thread: bool = True,
    ) -> None:
        self.generation = generation
        self.thread = thread
        self.owns_thread = owns_thread
        self.egl_context = egl_context
        self.mgl = mgl
        self.health = health
        self.timeout = timeout
        self._dead = False
        self._keeper: egl.EGLContext | None = None  # see keep_objects()
        requested = egl.Robustness(egl_context.reset_notification, egl_context.robust_access)
        self.info = _describe("owned-egl", mgl, health.robustness, requested)

    @classmethod
    def create(
        cls,
        generation: int,
        device_index: int | None = None,
        robust: bool = True,
        timeout: float | None = 60.0,
        reset_poll_interval: float = 0.005,
        thread: GLThread | None = None,
        made: Callable[[OwnedSession], None] | None = None,
    ) -> OwnedSession:
        """Create the EGL context on ``thread`` (a healthy GL thread kept across generations), or
        on a new thread that the session owns and stops on close.

        ``made(session)``: called on the GL thread with the session before it is returned, so that
        a caller cut short (an interrupt) just after it returned can still find and end it. A
        session made after its caller stopped waiting is closed on the GL thread.

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
                loader = egl_context.loader()
                mgl = moderngl_refs.create_context(standalone=True, require=330, context=loader)
                moderngl_refs.give_back_addresses(loader.deletes.addresses)
                # mgl.info is read (and cached by moderngl) in _describe, with the context current.
                health = egl.ContextHealth(egl_context, reset_poll_interval=reset_poll_interval)
                session = cls(generation, thread, egl_context, mgl, health, timeout, owns_thread)
            except BaseException:
                egl_context.destroy()
                raise
            finally:
                egl_context.release_current()
            if made is not None:
                made(session)
            return session

        def build_or_say_why() -> OwnedSession:
            # Here, on the GL thread: what the caller's wait raises (an interrupt) is not translated.
            try:
                return build()
            except (egl.EGLError, OSError, moderngl.Error, ValueError) as exc:
                raise GLUnavailableError(f"cannot create an EGL OpenGL context: {exc}") from exc

        try:
            # abandoned: a session made after its caller gave up waiting (interrupted, or timed out
            # on a GL thread given up) is closed on that thread (``made``'s owner may end it too)
            return thread.call(build_or_say_why, timeout, abandoned=OwnedSession.close)
        except GLUnavailableError:
            if owns_thread:
                thread.stop()
            raise

    def check(self) -> str | None:
        return self.health.lost_reason() or _frame_error(self.mgl.error)

    def run(self, frame: Callable[[], T]) -> T:
        if self._dead:
            raise ContextLostError("the context was lost", reason="lost earlier")

        def bracketed() -> T:
            try:
                # The context stays current on its own thread between frames (the thread does
                # nothing else): a make-current/release pair per frame cost ~35 us on an H100.
                if not self.egl_context.is_current():
                    self.egl_context.make_current()
            except egl.EGLError as exc:
                if exc.code_name != "EGL_CONTEXT_LOST":
                    # Not provably ours any more (EGL_BAD_ACCESS: the handle is current elsewhere,
                    # so it names another context now): never destroy it.
                    self.egl_context.disown()
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
            except BaseException:
                self._release_quietly()  # a failed frame leaves nothing current
                raise
            reason = self.check()
            if reason:
                self._release_quietly()
                raise ContextLostError(f"context lost during the frame: {reason}", reason=reason)
            return result

        try:
            return self.thread.call(bracketed, self.timeout)
        except ContextLostError:
            self._dead = True
            raise

    def _release_quietly(self) -> None:
        try:
            self.egl_context.release_current()
        except egl.EGLError as exc:
            log.debug("releasing a failed context: %s", exc)

    def lend_anchor(self) -> object:
        """The keeper context (see :meth:`keep_objects`): while it lives, so does the share group."""
        return self._keeper

    def keep_objects(self) -> bool:
        if self._keeper is not None:
            return True
        if self._dead:
            return False
        try:
            self._keeper = self.thread.call(self.egl_context.share_keeper, self.timeout)
        except (egl.EGLError, ContextLostError) as exc:
            log.info("no keeper context for lent views (they are copied instead): %s", exc)
            return False
        return True

    def _drop_keeper(self) -> None:
        """Let go of the keeper context (after the main one). Lent views hold it too (see
        :meth:`lend_anchor`): it is destroyed (``eglDestroyContext``, by its finalizer, on whichever
        thread drops the last reference) when the last of them goes, and the share group's objects
        with it; at once where none is held."""
        self._keeper = None

    def close(self, release: Callable[[], None] | None = None) -> None:
        """Release the objects (``release``) and the context, on its thread.

        Raises:
            ContextLostError: the context was lost before anyone noticed (it cannot be made
                current): nothing was released; the caller abandons the session (which keeps its
                thread for that) and reports the loss.
        """
        lost: list[str] = []

        def teardown() -> None:
            try:
                self.egl_context.make_current()
            except egl.EGLError as exc:
                lost.append(str(exc))
                return
            try:
                if release is not None:
                    release()
                self.mgl.release()  # destroys the EGL context (and the sentinel) through the loader
            except (egl.EGLError, moderngl.Error):
                self.egl_context.destroy()
            self._drop_keeper()

        try:
            self.thread.call(teardown, self.timeout)
        except ContextLostError:
            pass
        finally:
            if self.owns_thread and not lost:
                self.thread.stop()
        if lost:
            raise ContextLostError(f"the context was lost before its release: {lost[0]}", reason=lost[0])

    def abandon(self, release: Callable[[], None] | None = None, wait: bool = True) -> None:
        self._dead = True
        self.egl_context.retire()  # deletes through it do nothing from now on, even if drop() hangs

        def drop() -> None:
            self.egl_context.release_current()
            self.egl_context.destroy()  # EGL, not GL; leaves a disowned (recycled) handle alone
            self._drop_keeper()
            if release is not None:
                self._release_host_side(release)

        if not wait:  # (after an interrupt: the caller must not wait for a GL thread that may be busy)
            self.thread.post(drop)
            if self.owns_thread:
                self.thread.stop(timeout=0)
            return
        try:
            self.thread.call(drop, 5.0)
        except Exception as exc:
            if not driver_failure(exc):
                raise
            log.debug("abandoning generation %d: %s", self.generation, exc)  # hung or broken: left behind
        finally:
            if self.owns_thread:
                self.thread.stop(timeout=1.0)

    def _release_host_side(self, release: Callable[[], None]) -> None:
        """Run ``release`` and release the moderngl context with no context current on this
        thread (see :meth:`GLSession.abandon`); skipped where one still is, or where such calls
        may reach a driver (:func:`~gpu_seg.gl.rawgl.calls_without_context_do_nothing`)."""
        if int(egl.library().eglGetCurrentContext() or 0) or not rawgl.calls_without_context_do_nothing(
            self.egl_context.get_proc_address
        ):
            log.debug("generation %d: objects forgotten, not released", self.generation)
            return
        try:
            release()
            self.mgl.release()  # its loader's release: destroy() again, which does nothing now
        except Exception as exc:
            log.debug("releasing the objects of lost generation %d: %s", self.generation, exc)

    def gpu_memory(self) -> dict[str, object] | None:
        extensions = self.mgl.extensions
        return self.run(lambda: query_gpu_memory(self.egl_context.get_integer, extensions))

    def destroy_for_testing(self) -> None:
        """Destroy the EGL context the way a driver reset would leave it: gone, handles dangling."""

        def destroy() -> None:
            self.egl_context.release_current()
            egl.library().eglDestroyContext(self.egl_context.display.handle, self.egl_context.handle)

        self.thread.call(destroy, self.timeout)


# ------------------------------------------------------------------------------ attached sessions
_native_lock = threading.Lock()
_native_getters: list[tuple[str, Callable[[], int]]] | None = None
forks.renew_locks(sys.modules[__name__], "_native_lock")  # a forked child gets a new one


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


def _attach_moderngl() -> moderngl.Context:
    """A moderngl context for the application's current context, through gpu_seg's loader."""
    return moderngl_refs.create_context(require=330, context=rawgl.CurrentContextLoader())


class AttachedSession(GLSession):
    """A session on a context the application owns; gpu_seg renders into its own framebuffers there.

    The application makes its context current on its thread before calling ``process()``;
    gpu_seg does not change which context is current. If the application destroys the context
    (closes its window) or it is lost, frames raise ContextLostError (or fall back to the CPU)
    until the application attaches a new context.

    GL errors: a context has one error flag (some implementations keep a few), it records only
    the first error until ``glGetError`` reads it, and GL has no call that sets it again. So
    :meth:`run` reads the flag once before the frame and once after it. The read after the
    frame is gpu_seg's: ``GL_CONTEXT_LOST`` is a loss, any other error raises :class:`GLError`.
    The read before is the application's: an error it left pending would otherwise hide
    gpu_seg's own errors and be blamed on the frame. That error is consumed (GL cannot hold it
    back), never raised or attributed to the frame, and logged as a warning on the ``gpu_seg``
    logger with its name; ``GL_CONTEXT_LOST`` found there is a loss. Applications that check
    ``glGetError`` should do so before calling ``process()``.
    """

    owned = False

    def __init__(self, generation: int, mgl: moderngl.Context | None = None) -> None:
        native = native_current_context()
        if native is None:
            raise GLUnavailableError("no OpenGL context is current on this thread to attach to")
        try:
            self.mgl = mgl if mgl is not None else _attach_moderngl()
            self._owns_mgl = mgl is None  # made by gpu_seg: released with the session
        except Exception as exc:
            raise GLUnavailableError(f"cannot attach to the current OpenGL context: {exc}") from exc
        if self.mgl.version_code < 330:
            raise GLUnavailableError(f"OpenGL {self.mgl.version_code} is too old; 3.3 core is needed")
        self.generation = generation
        self.native = native
        self.thread_id = threading.get_ident()
        self._dead = False
        gl = CurrentContextGL()
        version, extensions = self.mgl.version_code, self.mgl.extensions
        try:
            robustness = egl.read_robustness(gl.get_integer, version, extensions)
            self.sentinel = egl.Sentinel(gl, egl.labels_available(version, extensions))
        except egl.EGLError as exc:  # no libOpenGL/libGL to reach the application's context
            raise GLUnavailableError(f"cannot attach to the current OpenGL context: {exc}") from exc
        self.info = _describe(f"attached-{native[0]}", self.mgl, robustness)

    @property
    def strict_identity(self) -> bool:
        """Whether the application named its moderngl context (``context=ctx``): then only objects
        of that very context are its own."""
        return not self._owns_mgl

    def _lost_reason(self) -> str | None:
        if released(self.mgl):
            return "the application released its moderngl context"
        if native_current_context() != self.native:
            return "the application's context is no longer current (destroyed or switched)"
        if not self.sentinel.present():
            return "the current context is not the one attached (its handle was recycled, or it was reset)"
        return None

    def check(self) -> str | None:
        return self._lost_reason() or _frame_error(self.mgl.error)

    def _take_application_error(self) -> str | None:
        """Read the error flag before the frame: the application's error, logged; a loss reason."""
        error = self.mgl.error
        if error == "GL_CONTEXT_LOST":
            return "glGetError returned GL_CONTEXT_LOST before the frame"
        if error != "GL_NO_ERROR":
            log.warning(
                "the application's GL context had %s pending when process() began; gpu_seg read it "
                "(GL cannot hold it back) and did not count it against the frame",
                error,
            )
        return None

    def _lost(self, message: str, reason: str) -> ContextLostError:
        self._dead = True
        return ContextLostError(f"attached context lost{message}: {reason}", reason=reason)

    def run(self, frame: Callable[[], T]) -> T:
        if self._dead:
            raise ContextLostError("the attached context was lost; attach a new one", reason="lost earlier")
        if threading.get_ident() != self.thread_id:
            raise GpuSegError(
                "an attached context is used on the thread that attached it; "
                "call process() from the application's GL thread"
            )
        reason = self._lost_reason() or self._take_application_error()
        if reason:
            raise self._lost("", reason)
        try:
            reset_state()  # the application's state (blending, pixel store...) must not reach the passes
            result = frame()
        except moderngl.Error as exc:
            reason = self.check()
            if reason:
                raise self._lost(" (GL failed)", reason) from exc
            raise GLError(f"GL call failed on a healthy context: {exc}") from exc
        reason = self.check()
        if reason:
            raise self._lost(" during the frame", reason)
        return result

    def gpu_memory(self) -> dict[str, object] | None:
        if self._dead or threading.get_ident() != self.thread_id or self._lost_reason() is not None:
            return None  # only the application's GL thread may ask its context
        return query_gpu_memory(CurrentContextGL().get_integer, self.mgl.extensions)

    def close(self, release: Callable[[], None] | None = None) -> None:
        if not self._dead and self._lost_reason() is None:
            if release is not None:
                release()
            self.sentinel.delete()
            self._release_mgl()

    def abandon(self, release: Callable[[], None] | None = None, wait: bool = True) -> None:
        self._dead = True
        if release is None or native_current_context() is not None:
            return
        if not rawgl.calls_without_context_do_nothing(rawgl.resolve):
            return
        try:
            release()  # no context current: GL calls land in the no-op stubs
            self._release_mgl()
        except Exception as exc:
            log.debug("releasing the objects of lost generation %d: %s", self.generation, exc)

    def _release_mgl(self) -> None:
        """Release the moderngl context gpu_seg made (its loader's release does nothing: the
        context itself is the application's); an application's moderngl context is left alone."""
        if self._owns_mgl:
            self.mgl.release()
