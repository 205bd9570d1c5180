"""EGL contexts owned by gpu_seg: creation (OpenGL core profile, robustness attributes where the
driver offers them), make-current, destruction, and the loader object that moderngl wraps.

Contexts and threads:
    A context is current on at most one thread at a time; ``eglMakeCurrent`` of a context that is
    current on another thread fails with ``EGL_BAD_ACCESS`` (raised as :class:`EGLError`). Each
    thread has its own current context, and GL calls go to the calling thread's current context:
    with no current context they go to libglvnd's no-op stubs, which do nothing and return 0
    (``glGetError`` then says ``GL_NO_ERROR``). Hand a context to another thread by calling
    :meth:`EGLContext.release_current` on the first thread before :meth:`EGLContext.make_current`
    on the second. :class:`EGLContext` objects are not locked; do not use one from two threads
    at once.

Destroyed contexts (measured on Mesa llvmpipe through libglvnd, see ``tests/test_egl.py``):
    * Destroyed (``eglDestroyContext``, or ``eglTerminate`` of its display) while current on this
      thread: EGL only marks it for deletion. It stays current, GL calls keep working on it,
      ``eglGetCurrentContext`` still returns it and ``eglMakeCurrent`` of it again *succeeds*
      (the already-current case short-circuits); only ``eglQueryContext`` fails
      (``EGL_BAD_CONTEXT``). :meth:`EGLContext.is_valid` uses that, and :meth:`EGLContext.make_current`
      checks it after every ``eglMakeCurrent``: it then releases the zombie (which frees it) and
      raises.
    * Not current (or released after the above): GL calls land in libglvnd's no-op stubs. Nothing
      crashes; ``glGetError`` and ``glGetGraphicsResetStatus`` return 0; ``glReadPixels`` leaves
      the destination untouched (moderngl's ``read()`` then returns an uninitialised buffer, i.e.
      stale heap bytes, not reliably zeros); ``glGen*``/``glMapBufferRange`` return 0/NULL, which
      moderngl turns into ``moderngl.Error`` ("cannot create texture", "cannot map the buffer").
    * If another context is current on the thread, GL calls go to *that* context, and GL object
      names (which start at 1 in every context) may alias its objects: a read returns its pixels.
    * The handle of a destroyed context can be handed to the next context created (the NVIDIA
      driver does so): then ``eglQueryContext`` succeeds and ``eglMakeCurrent`` makes the
      newcomer current. The handle alone cannot tell; :class:`~gpu_seg.gl.egl.health.ContextHealth`
      checks identity with a GL object of the context's own, and :meth:`EGLContext.disown`
      keeps gpu_seg from destroying the newcomer.
    Neither ``glGetError`` nor ``glGetGraphicsResetStatus`` detects any of this; run
    :meth:`~gpu_seg.gl.egl.health.ContextHealth.lost_reason` after GL work and before trusting a
    readback.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ... import forks
from ..moderngl_refs import SharedAddresses
from .bindings import (
    EGL_BAD_CONTEXT,
    EGL_CONTEXT_CLIENT_TYPE,
    EGL_DRAW,
    EGL_NONE,
    EGL_OPENGL_API,
    EGL_READ,
    EGLError,
    EGLLibrary,
    gl_library_address,
    gl_prototype,
    int_array,
    library,
)
from .deletes import DeleteGuard
from .devices import Display

__all__ = ["EGLContext", "EGLLoader", "preserve_current"]


class EGLContext:
    """An OpenGL core-profile context on an EGL display, owned by gpu_seg.

    Create with :func:`create_context`. Not thread-safe; see the module notes on threads.

    Attributes:
        display: the display it lives on.
        handle: the ``EGLContext`` pointer value (still readable after :meth:`destroy`).
        config: the ``EGLConfig`` pointer value.
        surface: the 1x1 pbuffer's ``EGLSurface`` value, 0 when surfaceless.
        gl_version: the ``(major, minor)`` that ``eglCreateContext`` accepted; the driver may give a
            higher compatible version (moderngl's ``version_code`` has the real one).
        robust_access: robust buffer access was requested and ``eglCreateContext`` accepted it.
        reset_notification: ``LOSE_CONTEXT_ON_RESET`` was requested and ``eglCreateContext``
            accepted it. Whether the GL driver honours what EGL accepted is a separate question:
            :func:`~gpu_seg.gl.egl.health.read_robustness` asks GL.
    """

    def __init__(
        self,
        display: Display,
        handle: int,
        config: int,
        surface: int,
        gl_version: tuple[int, int],
        robust_access: bool,
        reset_notification: bool,
        attributes: tuple[int, ...] = (),
    ) -> None:
        lib = library()
        self.attributes = attributes  # what eglCreateContext accepted (EGL_NONE-terminated)
        self.display = display
        self.handle = handle
        self.config = config
        self.surface = surface
        self.gl_version = gl_version
        self.robust_access = robust_access
        self.reset_notification = reset_notification
        self._destroyed = False
        self._disowned = False
        self._retired = False  # see retire()
        self._gl_cache: dict[str, Any] = {}
        self._lib = lib
        self._pid = forks.pid()  # a forked child never destroys its parent's contexts
        # Safety net if the object is dropped without destroy(): frees the EGL objects, without
        # touching whichever context is current (eglDestroyContext of a current one only marks it).
        self._finalizer = weakref.finalize(self, _finalize, lib, self._pid, display.handle, handle, surface)

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else "live"
        return (
            f"<EGLContext 0x{self.handle:x} GL {self.gl_version[0]}.{self.gl_version[1]} "
            f"{self.display.platform} robust={self.robust} {state}>"
        )

    @property
    def robust(self) -> bool:
        """True when EGL accepted any robustness attribute (reset notification or robust access)."""
        return self.robust_access or self.reset_notification

    @property
    def destroyed(self) -> bool:
        """True after :meth:`destroy`."""
        return self._destroyed

    @property
    def gone(self) -> bool:
        """True after :meth:`destroy`, :meth:`disown` or :meth:`retire`: nothing may be deleted
        through it any more (see :mod:`.deletes`)."""
        return self._destroyed or self._disowned or self._retired

    def retire(self) -> None:
        """Mark the context as ended before it is destroyed (any thread; no EGL call): from now on
        deletes through its moderngl context do nothing (see :mod:`.deletes`)."""
        self._retired = True

    # -- current-ness -----------------------------------------------------------------------------

    def make_current(self) -> None:
        """Make this context current on the calling thread.

        Raises:
            EGLError: the context was destroyed (``EGL_BAD_CONTEXT``), is current on another thread
                (``EGL_BAD_ACCESS``), was lost (``EGL_CONTEXT_LOST``), or its display was
                terminated (``EGL_NOT_INITIALIZED``).
        """
        if self._destroyed or self._disowned:
            raise EGLError("eglMakeCurrent", EGL_BAD_CONTEXT, "the context was destroyed")
        lib = library()
        if not lib.eglBindAPI(EGL_OPENGL_API):
            raise lib.error("eglBindAPI")
        surface = self.surface or None
        if not lib.eglMakeCurrent(self.display.handle, surface, surface, self.handle):
            raise lib.error("eglMakeCurrent")
        if not self.is_valid():
            # Destroyed (or its display terminated) while current on this thread: EGL keeps such a
            # context current and eglMakeCurrent of it again reports success (observed with
            # libglvnd + Mesa). Release it, which frees it, and report it as dead.
            if not lib.eglMakeCurrent(self.display.handle, None, None, None):
                lib.clear_error()
            raise EGLError(
                "eglMakeCurrent",
                EGL_BAD_CONTEXT,
                "the context was destroyed while current (marked for deletion); released it",
            )

    def release_current(self) -> None:
        """Make no context current on the calling thread if this context is current on it.

        Does nothing if another context (or none) is current.

        Raises:
            EGLError: ``eglMakeCurrent(EGL_NO_CONTEXT)`` failed.
        """
        if not self.is_current():
            return
        lib = library()
        if not lib.eglMakeCurrent(self.display.handle, None, None, None):
            raise lib.error("eglMakeCurrent", "releasing the current context")

    def is_current(self) -> bool:
        """Whether ``eglGetCurrentContext()`` on the calling thread is this context.

        Note that a context destroyed while current stays current (EGL only marks it for
        deletion); use :meth:`is_valid` to see that. This compares handles only: after
        :meth:`disown` it says whether the handle (now another context's) is current, so that
        :meth:`release_current` can still undo a make-current of the recycled handle.
        """
        lib = library()
        lib.eglBindAPI(EGL_OPENGL_API)
        return int(lib.eglGetCurrentContext() or 0) == self.handle

    def is_valid(self) -> bool:
        """Whether EGL still knows this context (``eglQueryContext`` succeeds).

        False after :meth:`destroy`, after someone else's ``eglDestroyContext`` (even while it is
        still current on this thread) and after ``eglTerminate`` of the display. Does not change the
        current context. Caveat: a handle destroyed elsewhere may be reused by EGL for a new
        context, and then this says True for the newcomer until :meth:`disown` is called.
        """
        if self._destroyed or self._disowned:
            return False
        lib = library()
        value = ctypes.c_int32(0)
        if not lib.eglQueryContext(
            self.display.handle, self.handle, EGL_CONTEXT_CLIENT_TYPE, ctypes.byref(value)
        ):
            lib.clear_error()
            return False
        return value.value == EGL_OPENGL_API

    def destroy(self) -> None:
        """Destroy the context (and its pbuffer). Idempotent, never raises.

        If the context is current on the calling thread it is released first, so the memory is
        freed now; if it is current on another thread EGL frees it when that thread releases it.
        After this, :meth:`make_current` raises :class:`EGLError`. After :meth:`disown` the handle
        is left alone, current or not (only the pbuffer is destroyed).
        """
        if self._destroyed:
            return
        if self._pid != forks.pid():  # made in the parent of this forked process: theirs, not ours
            self._destroyed = True
            self._finalizer.detach()
            return
        lib = library()
        # Checked before anything else: if someone else already destroyed the handle, EGL may hand
        # the same address to a new context once it is freed, so do not destroy it a second time.
        ours = not self._disowned and self.is_valid()
        self._destroyed = True
        try:
            lib.eglBindAPI(EGL_OPENGL_API)
            if not self._disowned and int(lib.eglGetCurrentContext() or 0) == self.handle:
                if not lib.eglMakeCurrent(self.display.handle, None, None, None):
                    lib.clear_error()
        finally:
            if ours:
                self._finalizer()  # eglDestroyContext + eglDestroySurface, errors ignored
            else:
                self._finalizer.detach()
                _finalize(lib, self._pid, self.display.handle, 0, self.surface)
            self._gl_cache.clear()

    def disown(self) -> None:
        """Record that :attr:`handle` no longer names this context: never destroy it.

        For a context found destroyed from outside whose handle EGL may already have handed to a
        newer context (someone else's, or gpu_seg's next generation): :meth:`destroy` then frees
        only the pbuffer, :meth:`make_current` raises, and neither does the finalizer that stands
        in for a forgotten :meth:`destroy` touch the handle.
        """
        if self._disowned:
            return
        self._disowned = True
        if self._finalizer.detach() is not None and self.surface:
            self._finalizer = weakref.finalize(
                self, _finalize, self._lib, self._pid, self.display.handle, 0, self.surface
            )

    @property
    def disowned(self) -> bool:
        """True after :meth:`disown`."""
        return self._disowned

    def share_keeper(self) -> EGLContext:
        """A new context in this context's share group, meant never to be made current.

        While it lives, the group's objects (buffers, and the host memory of their persistent
        mappings) outlive this context, even if this one is destroyed (by gpu_seg after a loss, or
        by anyone else). Destroy it when those objects are no longer needed.

        Raises:
            EGLError: ``eglCreateContext`` refused (the message says why).
        """
        if self._destroyed or self._disowned:
            raise EGLError("eglCreateContext", EGL_BAD_CONTEXT, "the context to share with was destroyed")
        lib = library()
        if not lib.eglBindAPI(EGL_OPENGL_API):
            raise lib.error("eglBindAPI")
        attributes = self.attributes or (EGL_NONE,)
        display, share = self.display.handle, self.handle
        handle = int(lib.eglCreateContext(display, self.config, share, int_array(attributes)) or 0)
        if not handle:
            raise lib.error("eglCreateContext", "a context sharing objects with the processor's")
        return EGLContext(
            self.display, handle, self.config, 0, self.gl_version, self.robust_access,
            self.reset_notification, attributes,
        )  # fmt: skip

    # -- GL entry points --------------------------------------------------------------------------

    def get_proc_address(self, name: str) -> int:
        """The address of a GL (or EGL) function: ``eglGetProcAddress``, else ``dlsym`` in libGL.

        Args:
            name: ``"glClear"`` and so on.

        Returns:
            The function address, 0 if neither source knows it. Under libglvnd
            ``eglGetProcAddress`` returns a dispatch stub for any ``gl*`` name, so a non-zero
            address does not prove that the driver implements the function.
        """
        address = library().proc(name)
        return address or gl_library_address(name)

    def gl_function(self, name: str) -> Any:
        """GL function ``name`` of this context, typed by its declared prototype (cached).

        Call it only while this context is current (GL calls go to the current context).

        Raises:
            EGLError: ``name`` has no declared prototype, or no address.
        """
        func = self._gl_cache.get(name)
        if func is None:
            prototype = gl_prototype(name)
            address = self.get_proc_address(name)
            if not address:
                raise EGLError("get_proc_address", None, f"{name} not found")
            func = prototype(address)
            self._gl_cache[name] = func
        return func

    def _require_current(self, what: str) -> None:
        if self._destroyed:
            raise EGLError(what, EGL_BAD_CONTEXT, "the context was destroyed")
        if not self.is_current():
            raise EGLError(what, EGL_BAD_CONTEXT, "the context is not current on this thread")

    def get_integer(self, pname: int) -> int:
        """``glGetIntegerv(pname)`` for a single-valued ``pname``; the context must be current.

        Raises:
            EGLError: the context is destroyed or not current on this thread.
        """
        self._require_current("glGetIntegerv")
        value = ctypes.c_int32(0)
        self.gl_function("glGetIntegerv")(pname, ctypes.byref(value))
        return int(value.value)

    def gl_error(self) -> int:
        """``glGetError()`` (one flag); the context must be current.

        Raises:
            EGLError: the context is destroyed or not current on this thread.
        """
        self._require_current("glGetError")
        return int(self.gl_function("glGetError")())

    def loader(self) -> EGLLoader:
        """A loader object for ``moderngl.create_context(context=...)``.

        moderngl issues GL calls inside ``create_context``, so make this context current first.
        """
        return EGLLoader(self)


def _finalize(lib: EGLLibrary, pid: int, display: int, context: int, surface: int) -> None:
    if pid != forks.pid():  # inherited through a fork: the parent still uses them
        return
    if context and not lib.eglDestroyContext(display, context):
        lib.clear_error()
    if surface and not lib.eglDestroySurface(display, surface):
        lib.clear_error()


_ADDRESSES = SharedAddresses()  # every EGLLoader's


class EGLLoader:
    """The object moderngl wraps: ``load``, ``__enter__``, ``__exit__``, ``release``.

    ``with moderngl_ctx:`` calls :meth:`__enter__` (make current, raising :class:`EGLError` if that
    fails) and :meth:`__exit__` (restore whatever was current before on this thread: nothing, or
    this context again when ``with`` blocks nest or the context was already current).
    ``moderngl_ctx.release()`` calls :meth:`release`, which destroys the EGL context.

    Attributes:
        context: the wrapped :class:`EGLContext`.
    """

    def __init__(self, context: EGLContext) -> None:
        self.context = context
        self._local = threading.local()
        self.deletes = DeleteGuard(lambda: not context.gone and context.is_current())

    def _stack(self) -> list[bool]:
        stack: list[bool] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = []
            self._local.stack = stack
        return stack

    def load(self, name: str) -> int:
        """The address of GL function ``name``, 0 if unknown (the same int object every time:
        moderngl keeps a reference to each, see :mod:`gpu_seg.gl.moderngl_refs`); for a function
        that deletes objects, this context's guarded form of it (see :mod:`.deletes`)."""
        address = _ADDRESSES.get(name, self.context.get_proc_address)
        guarded = self.deletes.address(name, address)
        return address if guarded is None else guarded

    def __enter__(self) -> EGLLoader:
        was_current = self.context.is_current() and self.context.is_valid()
        if not was_current:
            self.context.make_current()  # raises EGLError
        self._stack().append(was_current)
        return self

    def __exit__(self, *args: object) -> None:
        stack = self._stack()
        was_current = stack.pop() if stack else False
        if not was_current:
            self.context.release_current()

    def release(self) -> None:
        """Destroy the EGL context (moderngl calls this from ``Context.release()``)."""
        self.context.destroy()

    @property
    def standalone(self) -> bool:
        """Always True: there is no window framebuffer."""
        return True


@contextlib.contextmanager
def preserve_current() -> Iterator[None]:
    """Restore the calling thread's current EGL display, surfaces and context on exit.

    For code that switches contexts inside an application (or a test session) that keeps its own
    context current. If the saved context can no longer be made current (destroyed meanwhile),
    the thread is left with no current context.
    """
    lib = library()
    lib.eglBindAPI(EGL_OPENGL_API)
    saved_context = int(lib.eglGetCurrentContext() or 0)
    saved_display = int(lib.eglGetCurrentDisplay() or 0)
    saved_draw = int(lib.eglGetCurrentSurface(EGL_DRAW) or 0)
    saved_read = int(lib.eglGetCurrentSurface(EGL_READ) or 0)
    try:
        yield
    finally:
        lib.eglBindAPI(EGL_OPENGL_API)
        current = int(lib.eglGetCurrentContext() or 0)
        current_display = int(lib.eglGetCurrentDisplay() or 0)
        if saved_context:
            if not lib.eglMakeCurrent(saved_display, saved_draw or None, saved_read or None, saved_context):
                lib.clear_error()
                if current_display:
                    lib.eglMakeCurrent(current_display, None, None, None)
        elif current and current_display:
            if not lib.eglMakeCurrent(current_display, None, None, None):
                lib.clear_error()
