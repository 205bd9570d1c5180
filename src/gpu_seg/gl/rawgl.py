"""The few GL entry points moderngl 5.13 does not wrap: immutable buffer storage, persistent mapping, fences.

Resolved through ``eglGetProcAddress`` (libglvnd's dispatch stubs, which serve whichever context
is current on the calling thread: EGL or GLX), else ``glXGetProcAddressARB``. Every prototype is
typed (pointers as ``c_void_p``: a ``GLsync`` or a mapping is never truncated to an int).

:class:`PersistentBuffer` is a buffer with ``glBufferStorage(MAP_PERSISTENT | MAP_COHERENT |
CLIENT_STORAGE)``, mapped once for its whole life, wrapped as a ``moderngl.Buffer`` (through
``ctx.external_buffer``) so that ``Texture.read_into`` / ``Framebuffer.read_into`` / ``Texture.write``
can use it as a pixel pack or unpack buffer. Its host view is valid until :meth:`PersistentBuffer.release`
(or until the context is destroyed): never hand it out beyond that. moderngl's own
``Buffer.read/write/orphan`` must not be called on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from collections.abc import Callable

import moderngl
import numpy as np

from . import moderngl_refs

__all__ = [
    "CurrentContextLoader",
    "GLFunctions",
    "MappedArena",
    "PersistentBuffer",
    "calls_without_context_do_nothing",
    "get_integer",
    "gl_functions",
    "library_of",
    "resolve",
]

log = logging.getLogger("gpu_seg")

GL_COPY_WRITE_BUFFER = 0x8F37
GL_MAP_READ_BIT = 0x0001
GL_MAP_WRITE_BIT = 0x0002
GL_MAP_PERSISTENT_BIT = 0x0040
GL_MAP_COHERENT_BIT = 0x0080
GL_CLIENT_STORAGE_BIT = 0x0200
GL_SYNC_GPU_COMMANDS_COMPLETE = 0x9117
GL_SYNC_FLUSH_COMMANDS_BIT = 0x0001
GL_ALREADY_SIGNALED = 0x911A
GL_TIMEOUT_EXPIRED = 0x911B
GL_CONDITION_SATISFIED = 0x911C
GL_WAIT_FAILED = 0x911D

_u = ctypes.c_uint
_PROTOTYPES = {
    "glGenBuffers": ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(_u)),
    "glDeleteBuffers": ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(_u)),
    "glBindBuffer": ctypes.CFUNCTYPE(None, _u, _u),
    "glBufferStorage": ctypes.CFUNCTYPE(None, _u, ctypes.c_ssize_t, ctypes.c_void_p, _u),
    "glMapBufferRange": ctypes.CFUNCTYPE(ctypes.c_void_p, _u, ctypes.c_ssize_t, ctypes.c_ssize_t, _u),
    "glFenceSync": ctypes.CFUNCTYPE(ctypes.c_void_p, _u, _u),
    "glClientWaitSync": ctypes.CFUNCTYPE(_u, ctypes.c_void_p, _u, ctypes.c_uint64),
    "glDeleteSync": ctypes.CFUNCTYPE(None, ctypes.c_void_p),
    "glFlush": ctypes.CFUNCTYPE(None),
}


class GLFunctions:
    """Typed GL entry points (see :data:`_PROTOTYPES`), callable with the context current."""

    def __init__(self, resolve) -> None:
        for name, prototype in _PROTOTYPES.items():
            address = resolve(name)
            if not address:
                raise LookupError(f"{name} is not available")
            setattr(self, name, prototype(address))

    # -- fences ---------------------------------------------------------------------------------
    def fence(self) -> int:
        """A fence after the commands issued so far (``glFenceSync``)."""
        sync = self.glFenceSync(GL_SYNC_GPU_COMMANDS_COMPLETE, 0)
        if not sync:
            raise moderngl.Error("glFenceSync failed")
        return sync

    def wait(self, sync: int, timeout_s: float = 1.0) -> None:
        """Block until ``sync`` signalled (flushing first), then delete it.

        Raises:
            moderngl.Error: the wait failed (a lost context, for example); the caller's health
                check tells which.
        """
        try:
            flags = GL_SYNC_FLUSH_COMMANDS_BIT
            while True:
                status = self.glClientWaitSync(sync, flags, int(timeout_s * 1e9))
                if status in (GL_ALREADY_SIGNALED, GL_CONDITION_SATISFIED):
                    return
                if status != GL_TIMEOUT_EXPIRED:
                    raise moderngl.Error(f"glClientWaitSync failed (0x{status:04X})")
                flags = 0  # flushed once; a hung driver is the session's timeout to catch
        finally:
            self.glDeleteSync(sync)

    def delete(self, sync: int | None) -> None:
        if sync:
            self.glDeleteSync(sync)


def _first_symbol(libraries: list[str], symbol: str):
    """``symbol`` from the first of ``libraries`` that loads and has it, else None."""
    for library in libraries:
        try:
            return getattr(ctypes.CDLL(library), symbol)
        except (OSError, AttributeError):
            pass
    return None


@functools.cache
def _resolver():
    """``name -> address`` through EGL, else GLX; None when neither library loads."""
    for library, symbol in (("EGL", "eglGetProcAddress"), ("GL", "glXGetProcAddressARB")):
        found = ctypes.util.find_library(library)
        proc = _first_symbol([*([found] if found else []), f"lib{library}.so.1"], symbol)
        if proc is not None:
            proc.restype = ctypes.c_void_p
            proc.argtypes = [ctypes.c_char_p]
            return lambda name, proc=proc: proc(name.encode("ascii")) or 0
    return None


def resolve(name: str) -> int:
    """The address of the GL entry point ``name`` for the current context (0 where unknown)."""
    resolver = _resolver()
    return 0 if resolver is None else int(resolver(name))


#: Libraries whose GL entry points do nothing when no context is current: libglvnd's dispatch
#: (NVIDIA's and Mesa's drivers on current Linux distributions) and Mesa's shared glapi.
_NOOP_DISPATCH_LIBRARIES = ("libGLdispatch.so", "libglapi.so")
#: What releasing gpu_seg's objects calls (moderngl's releases and :class:`PersistentBuffer`'s).
_RELEASE_FUNCTIONS = (
    "glDeleteBuffers",
    "glDeleteFramebuffers",
    "glDeleteProgram",
    "glDeleteSamplers",
    "glDeleteShader",
    "glDeleteSync",
    "glDeleteTextures",
    "glDeleteVertexArrays",
)


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


@functools.cache
def _dladdr():
    function = ctypes.CDLL(None).dladdr
    function.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    function.restype = ctypes.c_int
    return function


def library_of(address: int) -> str | None:
    """The file name of the shared library that holds ``address`` (``dladdr``), or None."""
    if not address:
        return None
    try:
        dladdr = _dladdr()
    except (OSError, AttributeError):  # no dladdr (not glibc/musl)
        return None
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.basename(info.dli_fname.decode(errors="replace"))


def calls_without_context_do_nothing(resolve: Callable[[str], int]) -> bool:
    """Whether the GL functions that release objects, as ``resolve`` (``name -> address``) hands
    them out, do nothing when no context is current on the calling thread.

    True where every one of them is a stub of libglvnd's libGLdispatch or Mesa's libglapi: both
    switch a thread with no current context to a table of functions that do nothing. An EGL that
    hands out the driver's own functions (some embedded drivers) may need a context: False.
    """
    for name in _RELEASE_FUNCTIONS:
        library = library_of(resolve(name))
        if library is None or not library.startswith(_NOOP_DISPATCH_LIBRARIES):
            return False
    return True


_CURRENT_CONTEXT_ADDRESSES = moderngl_refs.SharedAddresses()  # every CurrentContextLoader's


class CurrentContextLoader:
    """The loader moderngl wraps for an application's context (``AttachedSession``): addresses
    through :func:`resolve`; entering, leaving and releasing do nothing (the application makes
    its context current and destroys it).

    Every address is the same int object every time, shared by all these loaders
    (:class:`~gpu_seg.gl.moderngl_refs.SharedAddresses`): moderngl keeps a reference to every
    object ``load`` returns, and the loaders it has itself returned a new int each time (21 KiB
    per context).
    """

    def load(self, name: str) -> int:
        """The address of GL function ``name``, 0 if unknown (the same int object every time)."""
        return _CURRENT_CONTEXT_ADDRESSES.get(name, resolve)

    def __enter__(self) -> CurrentContextLoader:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def release(self) -> None:
        """Nothing: the context is the application's."""


_GET_INTEGER = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.POINTER(ctypes.c_int))


def get_integer(pname: int) -> int | None:
    """``glGetIntegerv(pname)`` on the current context; None where the entry point is unknown or the
    query leaves the value unset (an unknown ``pname``)."""
    address = resolve("glGetIntegerv")
    if not address:
        return None
    value = ctypes.c_int(-1)
    _GET_INTEGER(address)(pname, ctypes.byref(value))
    return value.value if value.value >= 0 else None


def gl_functions(ctx: moderngl.Context) -> GLFunctions | None:
    """The functions for persistent buffers and fences, or None where the context lacks them.

    Needs ``GL_ARB_buffer_storage`` (core in 4.4) and ``GL_ARB_sync`` (core in 3.2).
    """
    if ctx.version_code < 440 and "GL_ARB_buffer_storage" not in ctx.extensions:
        return None
    resolve = _resolver()
    if resolve is None:
        return None
    try:
        return GLFunctions(resolve)
    except LookupError as exc:
        log.info("persistent mapped buffers unavailable: %s", exc)
        return None


#: The mapping access of each :class:`PersistentBuffer` mode.
_ACCESS = {
    "read": GL_MAP_READ_BIT,
    "write": GL_MAP_WRITE_BIT,
    "readwrite": GL_MAP_READ_BIT | GL_MAP_WRITE_BIT,
}


class PersistentBuffer:
    """A persistently mapped buffer of ``size`` bytes for reading (``"read"``), writing (``"write"``)
    or both (``"readwrite"``: results lent as writeable arrays).

    Attributes:
        buffer: the ``moderngl.Buffer`` wrapping it (a pack/unpack buffer for reads and writes).
        host: ``uint8`` view of the mapping; valid until :meth:`release`.
    """

    def __init__(self, ctx: moderngl.Context, gl: GLFunctions, size: int, mode: str) -> None:
        access = _ACCESS[mode]
        flags = access | GL_MAP_PERSISTENT_BIT | GL_MAP_COHERENT_BIT
        name = _u(0)
        gl.glGenBuffers(1, ctypes.byref(name))
        if not name.value:
            raise moderngl.Error("glGenBuffers failed")
        self._gl = gl
        self.name = name.value
        context = ctx.mglo
        before = sys.getrefcount(context)
        self.buffer = ctx.external_buffer(name.value, size)
        # moderngl 5.11-5.13 take a reference to the context here (see release()); kept to be given
        # back only where one was taken, and never on a free-threaded build (counts race there)
        took = sys.getrefcount(context) > before and moderngl_refs.counts_reliable()
        self._context = context if took else None
        try:
            gl.glBindBuffer(GL_COPY_WRITE_BUFFER, name.value)
            gl.glBufferStorage(GL_COPY_WRITE_BUFFER, size, None, flags | GL_CLIENT_STORAGE_BIT)
            pointer = gl.glMapBufferRange(GL_COPY_WRITE_BUFFER, 0, size, flags)
            gl.glBindBuffer(GL_COPY_WRITE_BUFFER, 0)
            error = ctx.error
            if not pointer or error != "GL_NO_ERROR":
                raise moderngl.Error(f"cannot map a persistent buffer of {size} bytes ({error})")
        except BaseException:
            self.release()
            raise
        self.size = size
        self.host = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_uint8)), (size,))

    def release(self) -> None:
        """Delete the buffer (which unmaps it); the host view must not be used afterwards.

        moderngl does not delete the GL name of an external buffer: ``glDeleteBuffers`` does.
        """
        self.host = np.empty(0, np.uint8)
        context, self._context = self._context, None
        before = sys.getrefcount(context)
        self.buffer.release()
        if context is not None and sys.getrefcount(context) == before:
            # moderngl 5.13: an external buffer takes a reference to its context that its release
            # never gives back (a plain buffer's does), so the context, and every generation's
            # EGL wrappers, stayed alive for good. Given back here, only when release() did not:
            # a moderngl that fixes it is left alone. (GL objects are made and released on the
            # GL thread only, so nothing else changes this count in between.)
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(context))
        self._gl.glDeleteBuffers(1, ctypes.byref(_u(self.name)))


class MappedArena:
    """A :class:`PersistentBuffer` that grows on demand (never shrinks), with at most one fence.

    Args:
        mode: ``"read"``, ``"write"`` or ``"readwrite"`` (see :class:`PersistentBuffer`).
        growth: a new buffer is at least this factor larger than the one it replaces.
    """

    #: Sizes are rounded up to this many bytes.
    GRANULE = 1 << 20

    def __init__(self, ctx: moderngl.Context, gl: GLFunctions, mode: str, growth: float = 1.0) -> None:
        self.ctx = ctx
        self.gl = gl
        self.mode = mode
        self.growth = growth
        self.buffer: PersistentBuffer | None = None
        self._fence: int | None = None

    def ensure(self, size: int) -> bool:
        """Make the buffer hold at least ``size`` bytes; returns whether it is a new buffer."""
        if self.buffer is not None and self.buffer.size >= size:
            return False
        old = self.buffer.size if self.buffer is not None else 0
        capacity = -(-max(size, int(old * self.growth)) // self.GRANULE) * self.GRANULE
        self.release()
        self.buffer = PersistentBuffer(self.ctx, self.gl, capacity, self.mode)
        return True

    def fence(self) -> None:
        """Fence the commands issued so far (replacing an earlier fence that nobody waited for)."""
        self.drop_fence()
        self._fence = self.gl.fence()

    def wait(self) -> bool:
        """Wait for the pending fence, if any; returns whether there was one."""
        fence, self._fence = self._fence, None
        if fence is None:
            return False
        self.gl.wait(fence)
        return True

    def drop_fence(self) -> None:
        fence, self._fence = self._fence, None
        self.gl.delete(fence)

    def objects(self) -> int:
        return int(self.buffer is not None)

    def release(self) -> None:
        """Delete the fence and the buffer (context alive and current)."""
        self.drop_fence()
        buffer, self.buffer = self.buffer, None
        if buffer is not None:
            buffer.release()

    def abandon(self) -> None:
        """Forget both without GL calls (context lost)."""
        self._fence = None
        self.buffer = None
