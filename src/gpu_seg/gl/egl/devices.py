"""EGL devices and displays: enumerate the ``EGLDeviceEXT`` handles, open and initialise the
display that gpu_seg renders on, and describe the setup for ``gpu-seg info``.

Displays are shared: EGL keeps one ``EGLDisplay`` per (platform, native display / device) for the
whole process, so every library that opens the same device gets the same handle, and
``eglTerminate`` on it invalidates *all* contexts on it, including other libraries' (glcontext, a
host application). gpu_seg therefore never calls ``eglTerminate``. :func:`open_display`
initialises the display (``eglInitialize`` is idempotent; calling it again also revives a display
that someone else terminated) and the display stays initialised until process exit, where EGL
cleans up.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import GLUnavailableError
from .bindings import (
    EGL_BAD_DEVICE_EXT,
    EGL_CLIENT_APIS,
    EGL_DRM_DEVICE_FILE_EXT,
    EGL_DRM_RENDER_NODE_FILE_EXT,
    EGL_EXTENSIONS,
    EGL_PLATFORM_DEVICE_EXT,
    EGL_PLATFORM_SURFACELESS_MESA,
    EGL_VENDOR,
    EGLError,
    EGLLibrary,
    library,
    split_extensions,
)

__all__ = ["ENV_DEVICE", "PLATFORMS", "DeviceInfo", "Display", "egl_info", "env_device_index", "open_display"]

ENV_DEVICE = "GPU_SEG_EGL_DEVICE"


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


def _client_extensions(lib: EGLLibrary) -> frozenset[str]:
    return split_extensions(lib.query_string(0, EGL_EXTENSIONS))


def _query_devices(lib: EGLLibrary, client_ext: frozenset[str]) -> list[DeviceInfo]:
    """Enumerate EGL devices; an empty list if EGL_EXT_device_enumeration is missing."""
    if not ({"EGL_EXT_device_enumeration", "EGL_EXT_device_base"} & client_ext):
        return []
    query = lib.extension_function("eglQueryDevicesEXT")
    if query is None:
        return []
    count = ctypes.c_int32(0)
    if not query(0, None, ctypes.byref(count)):
        lib.clear_error()
        return []
    if count.value <= 0:
        return []
    handles = (ctypes.c_void_p * count.value)()
    if not query(count.value, handles, ctypes.byref(count)):
        lib.clear_error()
        return []
    query_string = lib.extension_function("eglQueryDeviceStringEXT")

    def device_string(handle: int, name: int) -> str:
        if query_string is None:
            return ""
        value = query_string(handle, name)
        if value is None:
            lib.clear_error()
            return ""
        return bytes(value).decode("ascii", "replace")

    devices = []
    for index in range(count.value):
        handle = int(handles[index] or 0)
        extensions = split_extensions(device_string(handle, EGL_EXTENSIONS))
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
    """An initialised ``EGLDisplay``, shared process-wide (never terminated; see the module notes).

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


def env_device_index() -> int:
    """The EGL device that ``$GPU_SEG_EGL_DEVICE`` names (0 where it is unset or empty).

    Raises:
        ValueError: the variable is not an integer >= 0 (the message names it).
    """
    raw = os.environ.get(ENV_DEVICE, "").strip()
    if not raw:
        return 0
    try:
        index = int(raw)
    except ValueError:
        raise ValueError(f"${ENV_DEVICE} must be an integer device index, got {raw!r}") from None
    if index < 0:
        raise ValueError(f"${ENV_DEVICE} must be a device index >= 0, got {raw!r}")
    return index


def _initialize(
    lib: EGLLibrary,
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
                extensions=split_extensions(lib.query_string(handle, EGL_EXTENSIONS)),
            )
            _displays[handle] = display
    return display


def _platform_display(lib: EGLLibrary, client_ext: frozenset[str], platform: int, native: int) -> int:
    """``eglGetPlatformDisplay[EXT](platform, native, NULL)``, 0 if unavailable or failed."""
    names = ["eglGetPlatformDisplay"]  # EGL 1.5 core
    if "EGL_EXT_platform_base" in client_ext:
        names.insert(0, "eglGetPlatformDisplayEXT")
    for name in names:
        get_platform_display = lib.extension_function(name)
        if get_platform_display is not None:
            handle = get_platform_display(platform, native or None, None)
            if not handle:
                lib.clear_error()
            return int(handle or 0)
    return 0


def _try_platform(
    lib: EGLLibrary,
    client_ext: frozenset[str],
    platform: str,
    device: DeviceInfo | None,
    failures: list[str],
) -> Display | None:
    """Open and initialise the ``"device"`` or ``"surfaceless"`` platform's display, else record why."""
    label = f"device {device.index}" if device is not None else platform
    if device is not None:
        handle = _platform_display(lib, client_ext, EGL_PLATFORM_DEVICE_EXT, device.handle)
    else:
        handle = _platform_display(lib, client_ext, EGL_PLATFORM_SURFACELESS_MESA, 0)
    if not handle:
        failures.append(f"{label}: eglGetPlatformDisplayEXT returned EGL_NO_DISPLAY")
        return None
    try:
        return _initialize(lib, handle, platform, device, client_ext)
    except EGLError as exc:
        failures.append(f"{label}: {exc}")
        return None


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
    index = env_device_index() if device_index is None else int(device_index)
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
                display = _try_platform(lib, client_ext, "device", device, failures)
                if display is not None:
                    return display
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
            display = _try_platform(lib, client_ext, "surfaceless", None, failures)
            if display is not None:
                return display

    if "default" in platforms:
        handle = int(lib.eglGetDisplay(None) or 0)
        if handle:
            try:
                return _initialize(lib, handle, "default", None, client_ext)
            except EGLError as exc:
                failures.append(f"default: {exc}")
        else:
            lib.clear_error()
            failures.append("default: eglGetDisplay returned EGL_NO_DISPLAY")
    raise EGLError("open_display", None, "; ".join(failures))


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
    except (EGLError, GLUnavailableError, ValueError, OSError) as exc:  # GLUnavailable: forked
        info["error"] = str(exc)
    return info
