"""Headless EGL contexts owned by gpu_seg, through ctypes (no compiled code).

Why not glcontext: its EGL backend creates contexts without robustness attributes and ignores
``eglMakeCurrent`` failures, so a lost or destroyed context goes unnoticed. This module creates the
context itself, asks for ``LOSE_CONTEXT_ON_RESET`` reset notification where the driver offers it,
checks every ``eglMakeCurrent`` and hands moderngl a loader object::

    display = open_display()
    egl_ctx = create_context(display)
    egl_ctx.make_current()                      # moderngl issues GL calls while it wraps the loader
    ctx = moderngl.create_context(standalone=True, require=330, context=egl_ctx.loader())
    ...
    ctx.release()                               # destroys the EGL context too

Displays:
    EGL shares one ``EGLDisplay`` per (platform, native display / device) across the whole process:
    every library that opens the same device gets the same handle, and ``eglTerminate`` on it
    invalidates *all* contexts on it, including other libraries' (glcontext, a host application).
    gpu_seg therefore never calls ``eglTerminate``. :func:`open_display` initialises the display
    (``eglInitialize`` is idempotent; calling it again also revives a display that someone else
    terminated) and the display stays initialised until process exit, where EGL cleans up.

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
    Neither ``glGetError`` nor ``glGetGraphicsResetStatus`` detects any of this; check
    :meth:`EGLContext.check_alive` (``eglGetCurrentContext`` + ``eglQueryContext`` +
    ``glGetGraphicsResetStatus``) after GL work and before trusting a readback.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpu_seg.errors import GpuSegError

__all__ = [
    "GL_GUILTY_CONTEXT_RESET",
    "GL_INNOCENT_CONTEXT_RESET",
    "GL_LOSE_CONTEXT_ON_RESET",
    "GL_NO_ERROR",
    "GL_NO_RESET_NOTIFICATION",
    "GL_UNKNOWN_CONTEXT_RESET",
    "PLATFORMS",
    "DeviceInfo",
    "Display",
    "EGLContext",
    "EGLError",
    "EGLLoader",
    "create_context",
    "egl_error_name",
    "egl_info",
    "library",
    "open_display",
    "preserve_current",
]

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

EGL_FALSE = 0
EGL_TRUE = 1
EGL_NONE = 0x3038
EGL_DONT_CARE = -1

EGL_SUCCESS = 0x3000
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
EGL_NOT_INITIALIZED = 0x3001
EGL_BAD_ACCESS = 0x3002
EGL_BAD_CONTEXT = 0x3006
EGL_CONTEXT_LOST = 0x300E
EGL_BAD_PARAMETER = 0x300C
EGL_BAD_DEVICE_EXT = 0x322B

# eglQueryString
EGL_VENDOR = 0x3053
EGL_VERSION = 0x3054
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
EGL_NO_RESET_NOTIFICATION = 0x31BE
EGL_LOSE_CONTEXT_ON_RESET = 0x31BF
# EGL_EXT_create_context_robustness
EGL_CONTEXT_OPENGL_ROBUST_ACCESS_EXT = 0x30BF
EGL_CONTEXT_OPENGL_RESET_NOTIFICATION_STRATEGY_EXT = 0x3138
EGL_NO_RESET_NOTIFICATION_EXT = 0x31BE
EGL_LOSE_CONTEXT_ON_RESET_EXT = 0x31BF

# Platforms and devices
EGL_PLATFORM_DEVICE_EXT = 0x313F
EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
EGL_DRM_DEVICE_FILE_EXT = 0x3233
EGL_DRM_RENDER_NODE_FILE_EXT = 0x3377

# GL
GL_NO_ERROR = 0
GL_GUILTY_CONTEXT_RESET = 0x8253
GL_INNOCENT_CONTEXT_RESET = 0x8254
GL_UNKNOWN_CONTEXT_RESET = 0x8255
GL_RESET_NOTIFICATION_STRATEGY = 0x8256
GL_LOSE_CONTEXT_ON_RESET = 0x8252
GL_NO_RESET_NOTIFICATION = 0x8261
GL_CONTEXT_FLAGS = 0x821E
GL_CONTEXT_FLAG_ROBUST_ACCESS_BIT = 0x0004
GL_MAJOR_VERSION = 0x821B
GL_MINOR_VERSION = 0x821C
GL_NUM_EXTENSIONS = 0x821D
GL_EXTENSIONS = 0x1F03

ENV_LIBEGL = "GPU_SEG_LIBEGL"
ENV_DEVICE = "GPU_SEG_EGL_DEVICE"

_LIBEGL_NAMES = ("libEGL.so.1", "libEGL.so")
_LIBGL_NAMES = ("libOpenGL.so.0", "libGL.so.1")

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# libEGL binding
# --------------------------------------------------------------------------------------------------

_c_int_p = ctypes.POINTER(ctypes.c_int32)
_c_void_pp = ctypes.POINTER(ctypes.c_void_p)

_EGL_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "eglGetError": (ctypes.c_int32, []),
    "eglGetDisplay": (ctypes.c_void_p, [ctypes.c_void_p]),
    "eglInitialize": (ctypes.c_uint, [ctypes.c_void_p, _c_int_p, _c_int_p]),
    "eglQueryString": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int32]),
    "eglBindAPI": (ctypes.c_uint, [ctypes.c_uint]),
    "eglChooseConfig": (
        ctypes.c_uint,
        [ctypes.c_void_p, _c_int_p, _c_void_pp, ctypes.c_int32, _c_int_p],
    ),
    "eglCreateContext": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, _c_int_p]),
    "eglDestroyContext": (ctypes.c_uint, [ctypes.c_void_p, ctypes.c_void_p]),
    "eglMakeCurrent": (
        ctypes.c_uint,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
    ),
    "eglGetCurrentContext": (ctypes.c_void_p, []),
    "eglGetCurrentDisplay": (ctypes.c_void_p, []),
    "eglGetCurrentSurface": (ctypes.c_void_p, [ctypes.c_int32]),
    "eglQueryContext": (ctypes.c_uint, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, _c_int_p]),
    "eglCreatePbufferSurface": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p, _c_int_p]),
    "eglDestroySurface": (ctypes.c_uint, [ctypes.c_void_p, ctypes.c_void_p]),
    "eglGetProcAddress": (ctypes.c_void_p, [ctypes.c_char_p]),
    "eglTerminate": (ctypes.c_uint, [ctypes.c_void_p]),
    "eglReleaseThread": (ctypes.c_uint, []),
}

_QueryDevicesEXT = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int32, _c_void_pp, _c_int_p)
_QueryDeviceStringEXT = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int32)
_GetPlatformDisplayEXT = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, _c_int_p)
_GetPlatformDisplay = ctypes.CFUNCTYPE(
    ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ssize_t)
)
_GLGetError = ctypes.CFUNCTYPE(ctypes.c_uint)
_GLGetIntegerv = ctypes.CFUNCTYPE(None, ctypes.c_uint, _c_int_p)
_GLGetStringi = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint)


class _EGLLibrary:
    """libEGL with typed entry points, plus an optional libGL for ``dlsym`` fallbacks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dll = ctypes.CDLL(name)
        for func_name, (restype, argtypes) in _EGL_SIGNATURES.items():
            func = getattr(self.dll, func_name)
            func.restype = restype
            func.argtypes = argtypes
        self._gl_dll: ctypes.CDLL | None = None
        self._gl_dll_tried = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set in __init__: the typed libEGL entry points.
        if name.startswith("egl"):
            return getattr(self.dll, name)
        raise AttributeError(name)

    def error(self, function: str, detail: str = "") -> EGLError:
        """Build an :class:`EGLError` from ``eglGetError`` (which also clears it)."""
        return EGLError(function, int(self.dll.eglGetError()), detail)

    def proc(self, name: str) -> int:
        """``eglGetProcAddress(name)`` as an int (0 if unknown)."""
        return int(self.dll.eglGetProcAddress(name.encode("ascii")) or 0)

    def gl_dll(self) -> ctypes.CDLL | None:
        """The first of libOpenGL.so.0 / libGL.so.1 that loads, or ``None``."""
        with self._lock:
            if not self._gl_dll_tried:
                self._gl_dll_tried = True
                for candidate in _LIBGL_NAMES:
                    try:
                        self._gl_dll = ctypes.CDLL(candidate)
                        break
                    except OSError:
                        continue
        return self._gl_dll

    def query_string(self, display: int, name: int) -> str:
        """``eglQueryString``; ``""`` on failure (the error is cleared)."""
        value = self.dll.eglQueryString(display or None, name)
        if value is None:
            self.dll.eglGetError()
            return ""
        return bytes(value).decode("ascii", "replace")


_library: _EGLLibrary | None = None
_library_lock = threading.Lock()


def library() -> _EGLLibrary:
    """Load libEGL once per process.

    ``$GPU_SEG_LIBEGL`` names the library to load; otherwise ``libEGL.so.1``, then ``libEGL.so``.

    Returns:
        The loaded library wrapper.

    Raises:
        EGLError: no libEGL could be loaded (``code`` is ``None``).
    """
    global _library
    with _library_lock:
        if _library is None:
            override = os.environ.get(ENV_LIBEGL)
            candidates = (override,) if override else _LIBEGL_NAMES
            errors: list[str] = []
            for candidate in candidates:
                try:
                    _library = _EGLLibrary(candidate)
                    break
                except (OSError, AttributeError) as exc:
                    errors.append(f"{candidate}: {exc}")
            else:
                raise EGLError("load libEGL", None, "; ".join(errors))
        return _library


def _int_array(values: Sequence[int]) -> ctypes.Array[ctypes.c_int32]:
    return (ctypes.c_int32 * len(values))(*values)


def _split(extensions: str) -> frozenset[str]:
    return frozenset(extensions.split())


# --------------------------------------------------------------------------------------------------
# Devices and displays
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """One ``EGLDeviceEXT`` as reported by ``eglQueryDevicesEXT``.

    Attributes:
        index: position in the ``eglQueryDevicesEXT`` list.
        handle: the ``EGLDeviceEXT`` pointer value.
        extensions: the device extensions.
        drm_device_file: ``/dev/dri/cardN`` when EGL_EXT_device_drm says so, else ``""``.
        drm_render_node: ``/dev/dri/renderDN`` when EGL_EXT_device_drm_render_node says so, else ``""``.
        software: True for Mesa's software device (EGL_MESA_device_software).
    """

    index: int
    handle: int
    extensions: frozenset[str]
    drm_device_file: str = ""
    drm_render_node: str = ""
    software: bool = False


def _client_extensions(lib: _EGLLibrary) -> frozenset[str]:
    return _split(lib.query_string(0, EGL_EXTENSIONS))


def _query_devices(lib: _EGLLibrary, client_ext: frozenset[str]) -> list[DeviceInfo]:
    """Enumerate EGL devices; an empty list if EGL_EXT_device_enumeration is missing."""
    if not ({"EGL_EXT_device_enumeration", "EGL_EXT_device_base"} & client_ext):
        return []
    query_addr = lib.proc("eglQueryDevicesEXT")
    if not query_addr:
        return []
    query = _QueryDevicesEXT(query_addr)
    count = ctypes.c_int32(0)
    if not query(0, None, ctypes.byref(count)):
        lib.dll.eglGetError()
        return []
    if count.value <= 0:
        return []
    handles = (ctypes.c_void_p * count.value)()
    if not query(count.value, handles, ctypes.byref(count)):
        lib.dll.eglGetError()
        return []
    string_addr = lib.proc("eglQueryDeviceStringEXT")
    query_string = _QueryDeviceStringEXT(string_addr) if string_addr else None

    def device_string(handle: int, name: int) -> str:
        if query_string is None:
            return ""
        value = query_string(handle, name)
        if value is None:
            lib.dll.eglGetError()
            return ""
        return bytes(value).decode("ascii", "replace")

    devices = []
    for index in range(count.value):
        handle = int(handles[index] or 0)
        extensions = _split(device_string(handle, EGL_EXTENSIONS))
        devices.append(
            DeviceInfo(
                index=index,
                handle=handle,
                extensions=extensions,
                drm_device_file=(
                    device_string(handle, EGL_DRM_DEVICE_FILE_EXT)
                    if "EGL_EXT_device_drm" in extensions
                    else ""
                ),
                drm_render_node=(
                    device_string(handle, EGL_DRM_RENDER_NODE_FILE_EXT)
                    if "EGL_EXT_device_drm_render_node" in extensions
                    else ""
                ),
                software="EGL_MESA_device_software" in extensions,
            )
        )
    return devices


@dataclass(eq=False)
class Display:
    """An initialised ``EGLDisplay``, shared process-wide (see the module notes; never terminated).

    Attributes:
        handle: the ``EGLDisplay`` pointer value.
        platform: ``"device"`` (EGL_EXT_platform_device), ``"surfaceless"``
            (EGL_MESA_platform_surfaceless) or ``"default"`` (``eglGetDisplay(EGL_DEFAULT_DISPLAY)``).
        device: the chosen device for the ``"device"`` platform, else ``None``.
        version: the EGL version ``eglInitialize`` reported, as ``(major, minor)``.
        vendor: ``EGL_VENDOR``.
        client_apis: ``EGL_CLIENT_APIS`` (``"OpenGL OpenGL_ES"``...).
        client_extensions: the client (display-independent) extensions.
        extensions: the display extensions.
    """

    handle: int
    platform: str
    device: DeviceInfo | None
    version: tuple[int, int]
    vendor: str
    client_apis: str
    client_extensions: frozenset[str]
    extensions: frozenset[str]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device_index(self) -> int | None:
        """The index of :attr:`device`, or ``None`` off the device platform."""
        return self.device.index if self.device is not None else None

    def has_extension(self, name: str) -> bool:
        """Whether ``name`` is a display or client extension."""
        return name in self.extensions or name in self.client_extensions

    def reinitialize(self) -> None:
        """Call ``eglInitialize`` again: a no-op while initialised, revives a terminated display.

        Raises:
            EGLError: ``eglInitialize`` failed.
        """
        lib = library()
        major, minor = ctypes.c_int32(0), ctypes.c_int32(0)
        if not lib.eglInitialize(self.handle, ctypes.byref(major), ctypes.byref(minor)):
            raise lib.error("eglInitialize")


_displays: dict[int, Display] = {}
_displays_lock = threading.Lock()


def _env_device_index() -> int:
    raw = os.environ.get(ENV_DEVICE, "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${ENV_DEVICE} must be an integer device index, got {raw!r}") from None


def _initialize(
    lib: _EGLLibrary,
    handle: int,
    platform: str,
    device: DeviceInfo | None,
    client_ext: frozenset[str],
) -> Display:
    major, minor = ctypes.c_int32(0), ctypes.c_int32(0)
    if not lib.eglInitialize(handle, ctypes.byref(major), ctypes.byref(minor)):
        raise lib.error("eglInitialize", f"platform {platform}")
    with _displays_lock:
        display = _displays.get(handle)
        if display is None:
            display = Display(
                handle=handle,
                platform=platform,
                device=device,
                version=(major.value, minor.value),
                vendor=lib.query_string(handle, EGL_VENDOR),
                client_apis=lib.query_string(handle, EGL_CLIENT_APIS),
                client_extensions=client_ext,
                extensions=_split(lib.query_string(handle, EGL_EXTENSIONS)),
            )
            _displays[handle] = display
    return display


def _platform_display(lib: _EGLLibrary, client_ext: frozenset[str], platform: int, native: int) -> int:
    """``eglGetPlatformDisplay[EXT](platform, native, NULL)``, 0 if unavailable or failed."""
    if "EGL_EXT_platform_base" in client_ext:
        addr = lib.proc("eglGetPlatformDisplayEXT")
        if addr:
            handle = _GetPlatformDisplayEXT(addr)(platform, native or None, None)
            if not handle:
                lib.dll.eglGetError()
            return int(handle or 0)
    addr = lib.proc("eglGetPlatformDisplay")  # EGL 1.5 core
    if addr:
        handle = _GetPlatformDisplay(addr)(platform, native or None, None)
        if not handle:
            lib.dll.eglGetError()
        return int(handle or 0)
    return 0


PLATFORMS: tuple[str, ...] = ("device", "surfaceless", "default")


def open_display(device_index: int | None = None, *, platforms: Sequence[str] = PLATFORMS) -> Display:
    """Open and initialise an EGL display for headless rendering.

    Tries, in order: EGL_EXT_platform_device (device ``device_index``, else ``$GPU_SEG_EGL_DEVICE``,
    else 0; on NVIDIA machines device 0 is the first GPU, on Mesa the list may hold a software
    device), EGL_MESA_platform_surfaceless, then ``eglGetDisplay(EGL_DEFAULT_DISPLAY)``.

    The display is shared by the whole process and is never terminated (see the module notes);
    calling this again returns the same :class:`Display` object.

    Args:
        device_index: which ``eglQueryDevicesEXT`` device to use; ``None`` reads
            ``$GPU_SEG_EGL_DEVICE`` (default 0). A non-zero index never falls back to the other
            platforms, which have no notion of devices.
        platforms: which of ``"device"``, ``"surfaceless"``, ``"default"`` to try, in this order.

    Returns:
        The initialised display.

    Raises:
        ValueError: ``device_index`` (or the environment variable) is negative or not an integer,
            or ``platforms`` names an unknown platform.
        EGLError: libEGL is missing, the device index is out of range, or no display initialises.
    """
    index = _env_device_index() if device_index is None else int(device_index)
    if index < 0:
        raise ValueError(f"device_index must be >= 0, got {index}")
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise ValueError(f"platforms must be a non-empty subset of {PLATFORMS}, got {tuple(platforms)}")
    lib = library()
    client_ext = _client_extensions(lib)
    failures: list[str] = []

    if "device" in platforms:
        if "EGL_EXT_platform_device" not in client_ext:
            failures.append("device: EGL_EXT_platform_device missing")
        else:
            devices = _query_devices(lib, client_ext)
            if devices and index >= len(devices):
                raise EGLError(
                    "open_display", EGL_BAD_DEVICE_EXT, f"device {index} requested, {len(devices)} found"
                )
            if devices:
                device = devices[index]
                handle = _platform_display(lib, client_ext, EGL_PLATFORM_DEVICE_EXT, device.handle)
                if handle:
                    try:
                        return _initialize(lib, handle, "device", device, client_ext)
                    except EGLError as exc:
                        failures.append(f"device {index}: {exc}")
                else:
                    failures.append(f"device {index}: eglGetPlatformDisplayEXT returned EGL_NO_DISPLAY")
            else:
                failures.append("device: no devices")
    if index != 0:
        raise EGLError(
            "open_display",
            EGL_BAD_DEVICE_EXT,
            f"device {index} requested but the device platform is unusable ({'; '.join(failures)})",
        )

    if "surfaceless" in platforms:
        if "EGL_MESA_platform_surfaceless" not in client_ext:
            failures.append("surfaceless: EGL_MESA_platform_surfaceless missing")
        else:
            handle = _platform_display(lib, client_ext, EGL_PLATFORM_SURFACELESS_MESA, 0)
            if handle:
                try:
                    return _initialize(lib, handle, "surfaceless", None, client_ext)
                except EGLError as exc:
                    failures.append(f"surfaceless: {exc}")
            else:
                failures.append("surfaceless: eglGetPlatformDisplayEXT returned EGL_NO_DISPLAY")

    if "default" in platforms:
        handle = int(lib.eglGetDisplay(None) or 0)
        if handle:
            try:
                return _initialize(lib, handle, "default", None, client_ext)
            except EGLError as exc:
                failures.append(f"default: {exc}")
        else:
            lib.dll.eglGetError()
            failures.append("default: eglGetDisplay returned EGL_NO_DISPLAY")
    raise EGLError("open_display", None, "; ".join(failures))


# --------------------------------------------------------------------------------------------------
# Contexts
# --------------------------------------------------------------------------------------------------


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


def _choose_config(lib: _EGLLibrary, display: Display, pbuffer: bool) -> int:
    attributes = [
        EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT,
        EGL_SURFACE_TYPE, EGL_PBUFFER_BIT if pbuffer else 0,
        EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8, EGL_BLUE_SIZE, 8, EGL_ALPHA_SIZE, 8,
        EGL_NONE,
    ]  # fmt: skip
    config = ctypes.c_void_p(0)
    count = ctypes.c_int32(0)
    if not lib.eglChooseConfig(
        display.handle, _int_array(attributes), ctypes.byref(config), 1, ctypes.byref(count)
    ):
        raise lib.error("eglChooseConfig")
    if count.value < 1 or not config.value:
        raise EGLError("eglChooseConfig", None, "no OpenGL config" + (" with pbuffer" if pbuffer else ""))
    return int(config.value)


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
        robust_access: robust buffer access was requested and accepted.
        reset_notification: ``LOSE_CONTEXT_ON_RESET`` was requested and accepted.
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
    ) -> None:
        lib = library()
        self.display = display
        self.handle = handle
        self.config = config
        self.surface = surface
        self.gl_version = gl_version
        self.robust_access = robust_access
        self.reset_notification = reset_notification
        self._destroyed = False
        self._gl_cache: dict[str, Any] = {}
        self._reset_fn: Any = None
        self._reset_supported: bool | None = None
        # Safety net if the object is dropped without destroy(): frees the EGL objects, without
        # touching whichever context is current (eglDestroyContext of a current one only marks it).
        self._finalizer = weakref.finalize(self, _finalize, lib, display.handle, handle, surface)

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else "live"
        return (
            f"<EGLContext 0x{self.handle:x} GL {self.gl_version[0]}.{self.gl_version[1]} "
            f"{self.display.platform} robust={self.robust} {state}>"
        )

    @property
    def robust(self) -> bool:
        """True when any robustness attribute (reset notification or robust access) was accepted."""
        return self.robust_access or self.reset_notification

    @property
    def destroyed(self) -> bool:
        """True after :meth:`destroy`."""
        return self._destroyed

    # -- current-ness -----------------------------------------------------------------------------

    def make_current(self) -> None:
        """Make this context current on the calling thread.

        Raises:
            EGLError: the context was destroyed (``EGL_BAD_CONTEXT``), is current on another thread
                (``EGL_BAD_ACCESS``), was lost (``EGL_CONTEXT_LOST``), or its display was
                terminated (``EGL_NOT_INITIALIZED``).
        """
        if self._destroyed:
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
                lib.dll.eglGetError()
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
        deletion); use :meth:`is_valid` to see that.
        """
        lib = library()
        lib.eglBindAPI(EGL_OPENGL_API)
        return int(lib.eglGetCurrentContext() or 0) == self.handle

    def is_valid(self) -> bool:
        """Whether EGL still knows this context (``eglQueryContext`` succeeds).

        False after :meth:`destroy`, after someone else's ``eglDestroyContext`` (even while it is
        still current on this thread) and after ``eglTerminate`` of the display. Does not change the
        current context. Caveat: a handle destroyed elsewhere may be reused by EGL for a new context.
        """
        if self._destroyed:
            return False
        lib = library()
        value = ctypes.c_int32(0)
        if not lib.eglQueryContext(
            self.display.handle, self.handle, EGL_CONTEXT_CLIENT_TYPE, ctypes.byref(value)
        ):
            lib.dll.eglGetError()
            return False
        return value.value == EGL_OPENGL_API

    def destroy(self) -> None:
        """Destroy the context (and its pbuffer). Idempotent, never raises.

        If the context is current on the calling thread it is released first, so the memory is
        freed now; if it is current on another thread EGL frees it when that thread releases it.
        After this, :meth:`make_current` raises :class:`EGLError`.
        """
        if self._destroyed:
            return
        lib = library()
        # Checked before anything else: if someone else already destroyed the handle, EGL may hand
        # the same address to a new context once it is freed, so do not destroy it a second time.
        valid = self.is_valid()
        self._destroyed = True
        try:
            lib.eglBindAPI(EGL_OPENGL_API)
            if int(lib.eglGetCurrentContext() or 0) == self.handle:
                if not lib.eglMakeCurrent(self.display.handle, None, None, None):
                    lib.dll.eglGetError()
        finally:
            if valid:
                self._finalizer()  # eglDestroyContext + eglDestroySurface, errors ignored
            else:
                self._finalizer.detach()
                _finalize(lib, self.display.handle, 0, self.surface)
            self._gl_cache.clear()
            self._reset_fn = None

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
        lib = library()
        address = lib.proc(name)
        if address:
            return address
        gl = lib.gl_dll()
        if gl is None:
            return 0
        try:
            return int(ctypes.cast(getattr(gl, name), ctypes.c_void_p).value or 0)
        except AttributeError:
            return 0

    def _gl(self, name: str, prototype: Any) -> Any:
        func = self._gl_cache.get(name)
        if func is None:
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
        self._gl("glGetIntegerv", _GLGetIntegerv)(pname, ctypes.byref(value))
        return int(value.value)

    def gl_error(self) -> int:
        """``glGetError()`` (one flag); the context must be current.

        Raises:
            EGLError: the context is destroyed or not current on this thread.
        """
        self._require_current("glGetError")
        return int(self._gl("glGetError", _GLGetError)())

    def _resolve_reset_fn(self) -> None:
        major = self.get_integer(GL_MAJOR_VERSION)
        minor = self.get_integer(GL_MINOR_VERSION)
        names: list[str] = []
        if (major, minor) >= (4, 5):
            names.append("glGetGraphicsResetStatus")
        count = self.get_integer(GL_NUM_EXTENSIONS)
        get_stringi = self._gl("glGetStringi", _GLGetStringi)
        extensions = set()
        for i in range(count):
            value = get_stringi(GL_EXTENSIONS, i)
            if value:
                extensions.add(bytes(value).decode("ascii", "replace"))
        if "GL_KHR_robustness" in extensions:
            names.append("glGetGraphicsResetStatus")  # desktop GL: unsuffixed entry point
            names.append("glGetGraphicsResetStatusKHR")
        if "GL_ARB_robustness" in extensions:
            names.append("glGetGraphicsResetStatusARB")
        if "GL_EXT_robustness" in extensions:
            names.append("glGetGraphicsResetStatusEXT")
        for name in names:
            address = self.get_proc_address(name)
            if address:
                self._reset_fn = _GLGetError(address)
                self._reset_supported = True
                return
        self._reset_supported = False

    @property
    def reset_status_supported(self) -> bool | None:
        """Whether a ``glGetGraphicsResetStatus`` variant exists (``None`` until first queried)."""
        return self._reset_supported

    def graphics_reset_status(self) -> int:
        """``glGetGraphicsResetStatus`` (or its ARB/KHR/EXT variant); the context must be current.

        Returns:
            ``GL_NO_ERROR`` (0), ``GL_GUILTY_CONTEXT_RESET``, ``GL_INNOCENT_CONTEXT_RESET`` or
            ``GL_UNKNOWN_CONTEXT_RESET``. Always 0 when the driver has no such function. A
            non-zero status is only reported to contexts created with reset notification
            (:attr:`reset_notification`); after one, the context is unusable and must be replaced.

        Raises:
            EGLError: the context is destroyed or not current on this thread.
        """
        self._require_current("glGetGraphicsResetStatus")
        if self._reset_supported is None:
            self._resolve_reset_fn()
        if self._reset_fn is None:
            return GL_NO_ERROR
        return int(self._reset_fn())

    def check_alive(self) -> None:
        """Raise unless this context is current on this thread, valid and not reset.

        Call it after GL work and before trusting a readback: a context that is no longer current
        makes GL calls silent no-ops (reads leave the destination untouched, ``glGetError`` says
        ``GL_NO_ERROR``), and another context being current makes them hit that context instead.
        The checks are ``eglGetCurrentContext``, ``eglQueryContext`` and
        ``glGetGraphicsResetStatus``; all three are cheap.

        Raises:
            EGLError: ``EGL_BAD_CONTEXT`` when destroyed, not current or unknown to EGL;
                ``EGL_CONTEXT_LOST`` (with the reset status in the message) after a GPU reset.
        """
        if self._destroyed:
            raise EGLError("check_alive", EGL_BAD_CONTEXT, "the context was destroyed")
        if not self.is_current():
            raise EGLError("check_alive", EGL_BAD_CONTEXT, "the context is not current on this thread")
        if not self.is_valid():
            raise EGLError("check_alive", EGL_BAD_CONTEXT, "the context was destroyed while current")
        status = self.graphics_reset_status()
        if status != GL_NO_ERROR:
            raise EGLError("check_alive", EGL_CONTEXT_LOST, f"graphics reset status {_reset_name(status)}")

    def verify_robustness(self) -> tuple[bool, bool]:
        """Re-read robustness from GL and update :attr:`reset_notification` / :attr:`robust_access`.

        EGL accepting the attributes does not prove that the GL driver honours them; this asks GL
        (``GL_RESET_NOTIFICATION_STRATEGY``, ``GL_CONTEXT_FLAGS``). The context must be current.

        Returns:
            ``(reset_notification, robust_access)`` as GL reports them.

        Raises:
            EGLError: the context is destroyed or not current on this thread.
        """
        self.reset_notification = self.gl_reset_notification_strategy() == GL_LOSE_CONTEXT_ON_RESET
        flags = self.get_integer(GL_CONTEXT_FLAGS)
        self.robust_access = bool(flags & GL_CONTEXT_FLAG_ROBUST_ACCESS_BIT)
        return self.reset_notification, self.robust_access

    def gl_reset_notification_strategy(self) -> int:
        """``GL_RESET_NOTIFICATION_STRATEGY`` as the GL driver sees it; the context must be current.

        Returns:
            ``GL_LOSE_CONTEXT_ON_RESET`` or ``GL_NO_RESET_NOTIFICATION``.
        """
        return self.get_integer(GL_RESET_NOTIFICATION_STRATEGY)

    def loader(self) -> EGLLoader:
        """A loader object for ``moderngl.create_context(context=...)``.

        moderngl issues GL calls inside ``create_context``, so make this context current first.
        """
        return EGLLoader(self)


def _reset_name(status: int) -> str:
    names = {
        GL_NO_ERROR: "GL_NO_ERROR",
        GL_GUILTY_CONTEXT_RESET: "GL_GUILTY_CONTEXT_RESET",
        GL_INNOCENT_CONTEXT_RESET: "GL_INNOCENT_CONTEXT_RESET",
        GL_UNKNOWN_CONTEXT_RESET: "GL_UNKNOWN_CONTEXT_RESET",
    }
    return names.get(status, f"0x{status:04X}")


def _finalize(lib: _EGLLibrary, display: int, context: int, surface: int) -> None:
    if context and not lib.eglDestroyContext(display, context):
        lib.dll.eglGetError()
    if surface and not lib.eglDestroySurface(display, surface):
        lib.dll.eglGetError()


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

    def _stack(self) -> list[bool]:
        stack: list[bool] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = []
            self._local.stack = stack
        return stack

    def load(self, name: str) -> int:
        """The address of GL function ``name``, 0 if unknown."""
        return self.context.get_proc_address(name)

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
                lib.dll.eglGetError()
                if current_display:
                    lib.eglMakeCurrent(current_display, None, None, None)
        elif current and current_display:
            if not lib.eglMakeCurrent(current_display, None, None, None):
                lib.dll.eglGetError()


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
            handle = int(lib.eglCreateContext(display.handle, config, None, _int_array(attributes)) or 0)
            if not handle:
                error = lib.error("eglCreateContext")
                failures.append(
                    f"GL {major}.{minor} robust_access={attempt.robust_access} "
                    f"reset_notification={attempt.reset_notification}: {error.code_name}"
                )
                continue
            surface = 0
            if pbuffer:
                surface_attributes = _int_array([EGL_WIDTH, 1, EGL_HEIGHT, 1, EGL_NONE])
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
            )
    raise EGLError("eglCreateContext", None, "; ".join(failures))


# --------------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------------


def _iter_devices() -> Iterator[DeviceInfo]:
    lib = library()
    client_ext = _client_extensions(lib)
    if "EGL_EXT_platform_device" in client_ext or "EGL_EXT_device_enumeration" in client_ext:
        yield from _query_devices(lib, client_ext)


def egl_info(device_index: int | None = None) -> dict[str, Any]:
    """Describe the EGL setup, for ``gpu-seg info``. Never raises.

    Args:
        device_index: passed to :func:`open_display`.

    Returns:
        A JSON-serialisable dict: ``library``, ``client_extensions``, ``devices_count``,
        ``devices`` (extensions, DRM nodes, software flag), ``platform``, ``device_index``,
        ``version``, ``vendor``, ``client_apis``, ``display_extensions``, and ``error`` (a string)
        when something failed.
    """
    info: dict[str, Any] = {}
    try:
        lib = library()
        info["library"] = lib.name
        info["client_extensions"] = sorted(_client_extensions(lib))
        devices = list(_iter_devices())
        info["devices_count"] = len(devices)
        info["devices"] = [
            {
                "index": d.index,
                "extensions": sorted(d.extensions),
                "drm_device_file": d.drm_device_file,
                "drm_render_node": d.drm_render_node,
                "software": d.software,
            }
            for d in devices
        ]
        display = open_display(device_index)
        info["platform"] = display.platform
        info["device_index"] = display.device_index
        info["version"] = f"{display.version[0]}.{display.version[1]}"
        info["vendor"] = display.vendor
        info["client_apis"] = display.client_apis
        info["display_extensions"] = sorted(display.extensions)
    except (EGLError, ValueError, OSError) as exc:
        info["error"] = str(exc)
    return info
