"""glfw windows for the viewer: one OpenGL 3.3 core context per window.

Destroying a window destroys its context and everything in it (textures, programs), which is how
the viewer injects a real context loss. glfw itself is initialised once per :class:`WindowSystem`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable

import moderngl

from ..errors import GpuSegError

__all__ = ["COMMAND_KEYS", "ViewerError", "Window", "WindowSystem"]

#: What a key asks the viewer to do.
COMMAND_KEYS = {"L": "lose-context", "E": "next-effect", "Q": "quit", "ESCAPE": "quit"}


class ViewerError(GpuSegError, RuntimeError):
    """The viewer cannot run: no display, no window, no OpenGL 3.3 core context."""


def _glfw():
    try:
        import glfw
    except ImportError as exc:  # pragma: no cover - glfw is a dependency of the viewer extra
        raise ViewerError(f'the viewer needs glfw: pip install "gpu_seg[viewer]" ({exc})') from exc
    return glfw


class WindowSystem:
    """glfw, initialised (and terminated on :meth:`close`).

    A shared X server under load refuses a connection now and then, so initialisation is tried
    ``attempts`` times before it is reported as impossible.
    """

    def __init__(self, attempts: int = 5) -> None:
        self.glfw = _glfw()
        said = ""
        for attempt in range(attempts):
            with warnings.catch_warnings(record=True) as refusals:  # glfw warns of each refusal
                warnings.simplefilter("always")
                if self.glfw.init():
                    return
            said = f": {refusals[-1].message}" if refusals else said
            time.sleep(0.05 * (attempt + 1))
        display = os.environ.get("DISPLAY")
        where = f"DISPLAY={display}" if display else "DISPLAY is unset"
        raise ViewerError(f"glfw cannot open a display ({where}){said}; the viewer needs a window system")

    def poll(self) -> None:
        self.glfw.poll_events()

    def close(self) -> None:
        self.glfw.terminate()


class Window:
    """A window with its own OpenGL 3.3 core context, current on this thread once created.

    Args:
        system: the initialised window system.
        size: ``(width, height)`` of the drawable area in pixels (not resizable).
        title: the window title.
        visible: show the window (hidden windows still render and can be read back).
        on_command: called with a value of :data:`COMMAND_KEYS` when its key is pressed.
    """

    def __init__(
        self,
        system: WindowSystem,
        size: tuple[int, int],
        title: str,
        visible: bool = True,
        on_command: Callable[[str], None] | None = None,
    ) -> None:
        glfw = self._glfw = system.glfw
        glfw.default_window_hints()
        for hint, value in (
            (glfw.VISIBLE, visible),
            (glfw.RESIZABLE, False),
            (glfw.CONTEXT_VERSION_MAJOR, 3),
            (glfw.CONTEXT_VERSION_MINOR, 3),
            (glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE),
            (glfw.OPENGL_FORWARD_COMPAT, True),
        ):
            glfw.window_hint(hint, int(value))
        self.handle = glfw.create_window(size[0], size[1], _displayable(title), None, None)
        if not self.handle:
            raise ViewerError(f"glfw could not create a {size[0]}x{size[1]} window with OpenGL 3.3 core")
        glfw.make_context_current(self.handle)
        glfw.swap_interval(0)  # the viewer paces itself
        try:
            self.ctx = moderngl.create_context(require=330)
        except Exception as exc:
            glfw.destroy_window(self.handle)
            raise ViewerError(f"no OpenGL 3.3 context in the window: {exc}") from exc
        keys = {getattr(glfw, f"KEY_{name}"): command for name, command in COMMAND_KEYS.items()}
        if on_command is not None:

            def on_key(_window, key, _scancode, action, _mods) -> None:
                if action == glfw.PRESS and key in keys:
                    on_command(keys[key])

            glfw.set_key_callback(self.handle, on_key)

    @property
    def framebuffer_size(self) -> tuple[int, int]:
        width, height = self._glfw.get_framebuffer_size(self.handle)
        return int(width), int(height)

    @property
    def should_close(self) -> bool:
        return bool(self._glfw.window_should_close(self.handle))

    def request_close(self) -> None:
        self._glfw.set_window_should_close(self.handle, True)

    def set_title(self, title: str) -> None:
        self._glfw.set_window_title(self.handle, _displayable(title))

    def swap(self) -> None:
        self._glfw.swap_buffers(self.handle)

    def destroy(self) -> None:
        """Destroy the window and its context (every GL object in it dies with it)."""
        if self.handle:
            self._glfw.destroy_window(self.handle)
            self.handle = None


def _displayable(title: str) -> str:
    """``title`` as UTF-8 can carry it: a file name that is not UTF-8 (surrogate escapes) gets
    replacement characters (glfw encodes titles as UTF-8, which raised)."""
    return title.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
