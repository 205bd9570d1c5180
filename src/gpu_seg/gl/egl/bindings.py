"""ctypes bindings: libEGL with a declared prototype for every entry point gpu_seg calls, EGL
constants and errors, and the prototypes of the GL functions called outside moderngl.

Every function is typed before use: ctypes' default return type is a C ``int``, which would cut a
64-bit ``EGLContext``/``EGLDisplay`` pointer in half. :class:`EGLLibrary` exposes the entry points
of :data:`EGL_PROTOTYPES` as attributes and raises ``AttributeError`` for any other name, so a new
call cannot slip in untyped; extension entry points (:data:`EGL_EXTENSION_PROTOTYPES`) and GL
functions (:data:`GL_PROTOTYPES`) are looked up by address and wrapped in their prototype.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ... import forks
from ...errors import GpuSegError

__all__ = [
    "EGL_EXTENSION_PROTOTYPES",
    "EGL_PROTOTYPES",
    "ENV_LIBEGL",
    "GL_PROTOTYPES",
    "CurrentContextGL",
    "EGLError",
    "EGLLibrary",
    "egl_error_name",
    "library",
]

# --------------------------------------------------------------------------------------- constants
EGL_TRUE = 1
EGL_NONE = 0x3038

EGL_BAD_ACCESS = 0x3002
EGL_BAD_CONTEXT = 0x3006
EGL_BAD_DEVICE_EXT = 0x322B
_EGL_ERROR_NAMES: dict[int, str] = {
    0x3000: "EGL_SUCCESS",
    0x3001: "EGL_NOT_INITIALIZED",
    0x3002: "EGL_BAD_ACCESS",
    0x3003: "EGL_BAD_ALLOC",
    0x3004: "EGL_BAD_ATTRIBUTE",
    0x3005: "EGL_BAD_CONFIG",
    0x3006: "EGL_BAD_CONTEXT",
    0x3007: "EGL_BAD_CURRENT_SURFACE",
    0x3008: "EGL_BAD_DISPLAY",
    0x3009: "EGL_BAD_MATCH",
    0x300A: "EGL_BAD_NATIVE_PIXMAP",
    0x300B: "EGL_BAD_NATIVE_WINDOW",
    0x300C: "EGL_BAD_PARAMETER",
    0x300D: "EGL_BAD_SURFACE",
    0x300E: "EGL_CONTEXT_LOST",
    0x322B: "EGL_BAD_DEVICE_EXT",
}

# eglQueryString
EGL_VENDOR = 0x3053
EGL_EXTENSIONS = 0x3055
EGL_CLIENT_APIS = 0x308D

# Configs and surfaces
EGL_RED_SIZE = 0x3024
EGL_GREEN_SIZE = 0x3023
EGL_BLUE_SIZE = 0x3022
EGL_ALPHA_SIZE = 0x3021
EGL_SURFACE_TYPE = 0x3033
EGL_RENDERABLE_TYPE = 0x3040
EGL_PBUFFER_BIT = 0x0001
EGL_OPENGL_BIT = 0x0008
EGL_WIDTH = 0x3057
EGL_HEIGHT = 0x3056
EGL_DRAW = 0x3059
EGL_READ = 0x305A

# Client API
EGL_OPENGL_API = 0x30A2
EGL_CONTEXT_CLIENT_TYPE = 0x3097

# Context creation (EGL 1.5 / EGL_KHR_create_context)
EGL_CONTEXT_MAJOR_VERSION = 0x3098
EGL_CONTEXT_MINOR_VERSION = 0x30FB
EGL_CONTEXT_OPENGL_PROFILE_MASK = 0x30FD
EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT = 0x0001
EGL_CONTEXT_FLAGS_KHR = 0x30FC
EGL_CONTEXT_OPENGL_ROBUST_ACCESS_BIT_KHR = 0x0004
EGL_CONTEXT_OPENGL_ROBUST_ACCESS = 0x31B2
EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY = 0x31BD  # == ..._KHR
EGL_LOSE_CONTEXT_ON_RESET = 0x31BF
# EGL_EXT_create_context_robustness
EGL_CONTEXT_OPENGL_ROBUST_ACCESS_EXT = 0x30BF
EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY_EXT = 0x3138
EGL_LOSE_CONTEXT_ON_RESET_EXT = 0x31BF

# Platforms and devices
EGL_PLATFORM_DEVICE_EXT = 0x313F
EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
EGL_DRM_DEVICE_FILE_EXT = 0x3233
EGL_DRM_RENDER_NODE_FILE_EXT = 0x3377

ENV_LIBEGL = "GPU_SEG_LIBEGL"
_LIBEGL_NAMES = ("libEGL.so.1", "libEGL.so")
_LIBGL_NAMES = ("libOpenGL.so.0", "libGL.so.1")

# ------------------------------------------------------------------------------------------ errors


def egl_error_name(code: int) -> str:
    """Return the symbolic name of an EGL error code.

    Args:
        code: a value returned by ``eglGetError``.

    Returns:
        ``"EGL_BAD_CONTEXT"`` and so on, or ``"0x...."`` for an unknown code.
    """
    return _EGL_ERROR_NAMES.get(code, f"0x{code:04X}")


class EGLError(GpuSegError, RuntimeError):
    """An EGL call failed, or EGL is unusable.

    Attributes:
        function: the EGL entry point (or gpu_seg operation) that failed.
        code: the ``eglGetError`` code, or ``None`` when no EGL error code applies (libEGL missing,
            an entry point missing).
        code_name: ``"EGL_BAD_CONTEXT"`` and so on; ``""`` when ``code`` is ``None``.
    """

    def __init__(self, function: str, code: int | None, detail: str = "") -> None:
        self.function = function
        self.code = code
        self.code_name = egl_error_name(code) if code is not None else ""
        message = f"{function} failed"
        if code is not None:
            message += f": {self.code_name} (0x{code:04X})"
        if detail:
            message += f": {detail}"
        super().__init__(message)


# -------------------------------------------------------------------------------------- prototypes
_int_p = ctypes.POINTER(ctypes.c_int32)
_uint_p = ctypes.POINTER(ctypes.c_uint32)
_void_pp = ctypes.POINTER(ctypes.c_void_p)
_void_p = ctypes.c_void_p
_int = ctypes.c_int32
_uint = ctypes.c_uint32
_boolean = ctypes.c_uint  # EGLBoolean is a 32-bit unsigned int

#: libEGL's exported entry points: name -> (return type, argument types).
EGL_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "eglGetError": (_int, []),
    "eglGetDisplay": (_void_p, [_void_p]),
    "eglInitialize": (_boolean, [_void_p, _int_p, _int_p]),
    "eglTerminate": (_boolean, [_void_p]),
    "eglQueryString": (ctypes.c_char_p, [_void_p, _int]),
    "eglBindAPI": (_boolean, [_uint]),
    "eglChooseConfig": (_boolean, [_void_p, _int_p, _void_pp, _int, _int_p]),
    "eglCreateContext": (_void_p, [_void_p, _void_p, _void_p, _int_p]),
    "eglDestroyContext": (_boolean, [_void_p, _void_p]),
    "eglMakeCurrent": (_boolean, [_void_p, _void_p, _void_p, _void_p]),
    "eglGetCurrentContext": (_void_p, []),
    "eglGetCurrentDisplay": (_void_p, []),
    "eglGetCurrentSurface": (_void_p, [_int]),
    "eglQueryContext": (_boolean, [_void_p, _void_p, _int, _int_p]),
    "eglCreatePbufferSurface": (_void_p, [_void_p, _void_p, _int_p]),
    "eglDestroySurface": (_boolean, [_void_p, _void_p]),
    "eglGetProcAddress": (_void_p, [ctypes.c_char_p]),
    "eglReleaseThread": (_boolean, []),
}

#: Entry points reached through ``eglGetProcAddress`` (extensions, EGL 1.5 without an export).
EGL_EXTENSION_PROTOTYPES: dict[str, Any] = {
    "eglQueryDevicesEXT": ctypes.CFUNCTYPE(_boolean, _int, _void_pp, _int_p),
    "eglQueryDeviceStringEXT": ctypes.CFUNCTYPE(ctypes.c_char_p, _void_p, _int),
    "eglGetPlatformDisplayEXT": ctypes.CFUNCTYPE(_void_p, _uint, _void_p, _int_p),
    "eglGetPlatformDisplay": ctypes.CFUNCTYPE(_void_p, _uint, _void_p, ctypes.POINTER(ctypes.c_ssize_t)),
}

_reset_status = ctypes.CFUNCTYPE(_uint)

#: GL functions gpu_seg calls itself (moderngl calls the rest through its own loader).
GL_PROTOTYPES: dict[str, Any] = {
    "glGetError": ctypes.CFUNCTYPE(_uint),
    "glGetIntegerv": ctypes.CFUNCTYPE(None, _uint, _int_p),
    "glGetStringi": ctypes.CFUNCTYPE(ctypes.c_char_p, _uint, _uint),
    "glGetGraphicsResetStatus": _reset_status,
    "glGetGraphicsResetStatusKHR": _reset_status,
    "glGetGraphicsResetStatusARB": _reset_status,
    "glGetGraphicsResetStatusEXT": _reset_status,
    "glGenBuffers": ctypes.CFUNCTYPE(None, _int, _uint_p),
    "glDeleteBuffers": ctypes.CFUNCTYPE(None, _int, _uint_p),
    "glBindBuffer": ctypes.CFUNCTYPE(None, _uint, _uint),
    "glBufferData": ctypes.CFUNCTYPE(None, _uint, ctypes.c_ssize_t, _void_p, _uint),
    "glGetBufferParameteriv": ctypes.CFUNCTYPE(None, _uint, _uint, _int_p),
    "glGetBufferSubData": ctypes.CFUNCTYPE(None, _uint, ctypes.c_ssize_t, ctypes.c_ssize_t, _void_p),
    "glIsBuffer": ctypes.CFUNCTYPE(ctypes.c_ubyte, _uint),
    "glObjectLabel": ctypes.CFUNCTYPE(None, _uint, _uint, _int, ctypes.c_char_p),
    "glGetObjectLabel": ctypes.CFUNCTYPE(None, _uint, _uint, _int, _int_p, ctypes.c_char_p),
}


def gl_prototype(name: str) -> Any:
    """The ctypes prototype of GL function ``name``.

    Raises:
        EGLError: ``name`` has no declared prototype in :data:`GL_PROTOTYPES`.
    """
    try:
        return GL_PROTOTYPES[name]
    except KeyError:
        raise EGLError("gl_prototype", None, f"{name} has no declared prototype in GL_PROTOTYPES") from None


# ------------------------------------------------------------------------------------------ libEGL


class EGLLibrary:
    """libEGL with typed entry points: the names of :data:`EGL_PROTOTYPES` are attributes.

    Attributes:
        name: the file name it was loaded from.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        dll = ctypes.CDLL(name)
        for func_name, (restype, argtypes) in EGL_PROTOTYPES.items():
            func = getattr(dll, func_name)
            func.restype = restype
            func.argtypes = argtypes
            setattr(self, func_name, func)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that __init__ did not set: an entry point without a prototype.
        raise AttributeError(
            f"{name} has no declared prototype (gpu_seg.gl.egl.bindings.EGL_PROTOTYPES); "
            "an untyped call would truncate pointer results"
        )

    def error(self, function: str, detail: str = "") -> EGLError:
        """Build an :class:`EGLError` from ``eglGetError`` (which also clears it)."""
        return EGLError(function, int(self.eglGetError()), detail)

    def clear_error(self) -> None:
        """Read and drop ``eglGetError`` after a failure that is handled (expected, or ignored)."""
        self.eglGetError()

    def proc(self, name: str) -> int:
        """``eglGetProcAddress(name)`` as an int (0 if unknown)."""
        return int(self.eglGetProcAddress(name.encode("ascii")) or 0)

    def extension_function(self, name: str) -> Any | None:
        """Extension entry point ``name`` typed by :data:`EGL_EXTENSION_PROTOTYPES`, or ``None``."""
        address = self.proc(name)
        return EGL_EXTENSION_PROTOTYPES[name](address) if address else None

    def query_string(self, display: int, name: int) -> str:
        """``eglQueryString``; ``""`` on failure (the error is cleared)."""
        value = self.eglQueryString(display or None, name)
        if value is None:
            self.clear_error()
            return ""
        return bytes(value).decode("ascii", "replace")


_library: EGLLibrary | None = None
_library_lock = threading.Lock()


def library() -> EGLLibrary:
    """Load libEGL once per process.

    ``$GPU_SEG_LIBEGL`` names the library to load; otherwise ``libEGL.so.1``, then ``libEGL.so``.

    Returns:
        The loaded library wrapper.

    Raises:
        EGLError: no libEGL could be loaded (``code`` is ``None``).
        ForkedProcessError: this process was forked after EGL was loaded (see :mod:`gpu_seg.forks`).
    """
    global _library
    forks.check_egl_usable()  # never in a child forked after EGL was loaded: raises
    with _library_lock:
        if _library is None:
            override = os.environ.get(ENV_LIBEGL)
            candidates = (override,) if override else _LIBEGL_NAMES
            errors: list[str] = []
            for candidate in candidates:
                try:
                    _library = EGLLibrary(candidate)
                    break
                except (OSError, AttributeError) as exc:
                    errors.append(f"${ENV_LIBEGL}={candidate}: {exc}" if override else str(exc))
            else:
                raise EGLError("load libEGL", None, "; ".join(errors))
            forks.note_egl_loaded()
        return _library


# -------------------------------------------------------------------------------------- libOpenGL
_gl_dll: ctypes.CDLL | None = None
_gl_dll_tried = False
_gl_dll_lock = threading.Lock()
forks.renew_locks(sys.modules[__name__], "_library_lock", "_gl_dll_lock")  # new in a forked child


def _gl_library() -> ctypes.CDLL | None:
    """The first of libOpenGL.so.0 / libGL.so.1 that loads, or ``None``."""
    global _gl_dll, _gl_dll_tried
    with _gl_dll_lock:
        if not _gl_dll_tried:
            _gl_dll_tried = True
            for candidate in _LIBGL_NAMES:
                try:
                    _gl_dll = ctypes.CDLL(candidate)
                    break
                except OSError:
                    continue
    return _gl_dll


def gl_library_address(name: str) -> int:
    """The address of GL function ``name`` exported by libOpenGL/libGL (``dlsym``), 0 if none.

    Under libglvnd these exports dispatch to the calling thread's current context, whichever
    API (EGL or GLX) made it current.
    """
    dll = _gl_library()
    if dll is None:
        return 0
    try:
        return int(ctypes.cast(getattr(dll, name), ctypes.c_void_p).value or 0)
    except AttributeError:
        return 0


class CurrentContextGL:
    """GL functions of whichever context is current on the calling thread, typed by
    :data:`GL_PROTOTYPES`: libOpenGL/libGL exports, which libglvnd dispatches to the current
    context of either API (GLX or EGL). For contexts gpu_seg did not create (an application's).
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def gl_function(self, name: str) -> Any:
        """GL function ``name``.

        Raises:
            EGLError: ``name`` has no declared prototype, or libOpenGL/libGL does not export it.
        """
        func = self._cache.get(name)
        if func is None:
            prototype = gl_prototype(name)
            address = gl_library_address(name)
            if not address:
                raise EGLError("dlsym", None, f"{name} not found in {' or '.join(_LIBGL_NAMES)}")
            func = self._cache[name] = prototype(address)
        return func

    def get_integer(self, pname: int) -> int:
        """``glGetIntegerv(pname)`` for a single-valued ``pname``."""
        value = ctypes.c_int32(0)
        self.gl_function("glGetIntegerv")(pname, ctypes.byref(value))
        return int(value.value)


def int_array(values: Sequence[int]) -> ctypes.Array[ctypes.c_int32]:
    """An ``EGLint`` attribute list."""
    return (ctypes.c_int32 * len(values))(*values)


def split_extensions(extensions: str) -> frozenset[str]:
    """An extension string as a set of names."""
    return frozenset(extensions.split())
