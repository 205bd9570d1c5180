"""The viewer's loop: frames -> segmenter (in the window's context) -> compositor -> window.

Context loss: :meth:`Viewer.request_context_loss` (the ``L`` key, or ``inject_loss_at``) destroys
the window, and with it its context and every GL object in it, then opens a new window with a new
context. The segmenter's post-processor, attached to the old context, finds it gone on the next
frame: it reports ``context_lost`` and computes that frame on the CPU (``backend="auto"``); the
viewer then calls ``postprocessor.attach()`` with the new context current, and the following
frames run on the GPU again. A loss the viewer did not cause (a driver reset) is handled the same
way, the window being recreated first.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ContextLostError, InputError
from ..events import EventKind
from ..postprocessor import BackendChoice, Event
from ..segmenter import ImageSegmenter, SegmentationResult
from .compositor import MAX_BLUR_RADIUS, Compositor
from .effects import Effect, default_background
from .layout import Layout, plan_layout
from .sources import FrameSource, fit_image
from .window import Window, WindowSystem

__all__ = ["FrameRecord", "Viewer", "ViewerOptions", "ViewerReport", "stats_line"]

log = logging.getLogger("gpu_seg")

#: Seconds between refreshes of the stats bar's figures (a loss or a backend change shows at once).
STATS_REFRESH_S = 0.25
_FPS_WINDOW = 32


@dataclass(frozen=True)
class ViewerOptions:
    """How the viewer runs.

    Attributes:
        effect: what to do with the background.
        background: uint8 ``(H, W, 3)`` RGB replacement background, any size (fitted to the frame);
            None: a built-in gradient.
        frames: stop after this many frames (None: until the window is closed or the video ends).
        inject_loss_at: frame indices (from 0) before which a context loss is injected.
        max_fps: frames per second at most (None: the source's rate; 0: as fast as possible).
        visible: show the window (a hidden one renders the same and can be read back).
        blur_radius: taps on each side of the blur.
        max_window: the largest picture, ``(width, height)``; larger frames are scaled down.
        backend, num_threads: as for :class:`~gpu_seg.ImageSegmenter`.
    """

    effect: Effect = Effect.BLUR
    background: np.ndarray | None = None
    frames: int | None = None
    inject_loss_at: frozenset[int] = frozenset()
    max_fps: float | None = None
    visible: bool = True
    blur_radius: int = 12
    max_window: tuple[int, int] = (1280, 720)
    backend: BackendChoice = "auto"
    num_threads: int | None = None

    def checked(self) -> ViewerOptions:
        """These options with ``effect`` as an :class:`Effect`, or InputError naming the bad one."""
        try:
            effect = Effect(self.effect)
        except ValueError:
            choices = ", ".join(e.value for e in Effect)
            raise InputError("effect", f"unknown effect {self.effect!r}; expected one of {choices}") from None
        if self.frames is not None and self.frames < 1:
            raise InputError("frames", f"expected a positive number of frames, got {self.frames}")
        if not 0 <= self.blur_radius <= MAX_BLUR_RADIUS:
            raise InputError("blur_radius", f"expected 0..{MAX_BLUR_RADIUS}, got {self.blur_radius}")
        if self.max_fps is not None and not self.max_fps >= 0:
            raise InputError("max_fps", f"expected a non-negative rate, got {self.max_fps}")
        background = self.background
        if background is not None and (
            not isinstance(background, np.ndarray)
            or background.dtype != np.uint8
            or background.ndim != 3
            or background.shape[2] != 3
        ):
            raise InputError("background", "expected a uint8 (H, W, 3) RGB image")
        return dataclasses.replace(self, effect=effect)


@dataclass(frozen=True)
class FrameRecord:
    """One frame as the viewer drew it (given to ``on_frame`` before the buffers are swapped).

    ``image`` is the frame (uint8 RGB), ``confidence_masks`` the segmenter's float32 ``(C, H, W)``
    output that the picture was composited with, ``bar_text`` the stats line drawn under it.
    """

    index: int
    timestamp_ms: int
    image: np.ndarray
    confidence_masks: np.ndarray
    backend: str
    model_ms: float
    postprocess_ms: float
    effect: Effect
    context_losses: int
    bar_text: str


@dataclass
class ViewerReport:
    """What a run did: frames drawn, seconds, frames per post-processing backend, the context
    losses the viewer recovered from, windows opened, and the post-processor's final ``stats``."""

    frames: int = 0
    seconds: float = 0.0
    backends: collections.Counter = field(default_factory=collections.Counter)
    context_losses: int = 0
    windows_opened: int = 0
    last_bar_text: str = ""
    postprocessor: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def stats_line(fps: float, model_ms: float, post_ms: float, backend: str, losses: int, effect: Effect) -> str:
    """The stats bar's text."""
    return (
        f" {fps:.1f} FPS  MODEL {model_ms:.1f} MS  POST {post_ms:.1f} MS  {backend.upper()}  "
        f"LOSSES {losses}  {effect.value.upper()}"
    )


class _Figures:
    """Frame rate over the last frames, and the stats line refreshed a few times a second."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=_FPS_WINDOW)
        self._refreshed = float("-inf")
        self._key: tuple | None = None
        self.text = ""

    def update(self, result: SegmentationResult, losses: int, effect: Effect) -> str:
        now = time.perf_counter()
        self._times.append(now)
        key = (result.backend, losses, effect)
        if key != self._key or now - self._refreshed >= STATS_REFRESH_S:
            span = self._times[-1] - self._times[0]
            fps = (len(self._times) - 1) / span if span > 0 else 0.0
            self.text = stats_line(
                fps, result.model_ms, result.postprocess_ms, result.backend, losses, effect
            )
            self._key, self._refreshed = key, now
        return self.text


class _Pacer:
    """Keeps a loop at ``rate`` iterations per second at most (0 or None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._due = time.perf_counter()

    #: Longest sleep between two looks at the window's events while waiting.
    POLL_S = 0.02

    def wait(self, poll: Callable[[], None] | None = None, done: Callable[[], bool] | None = None) -> None:
        """Sleep until the next iteration is due, calling ``poll`` every :data:`POLL_S` seconds
        (the window's events: Q, Esc, closing) and ending early once ``done()`` says so."""
        if not self._interval:
            return
        self._due += self._interval
        while not (done is not None and done()):
            left = self._due - time.perf_counter()
            if left <= 0:
                break
            time.sleep(min(left, self.POLL_S))
            if poll is not None:
                poll()
        self._due = max(self._due, time.perf_counter() - self._interval)  # a slow frame banks no time


class Viewer:
    """Plays ``source`` through the segmenter and composites every frame in a glfw window.

    Args:
        model: the segmentation ``.tflite`` bytes (MediaPipe metadata).
        source: frames (see :func:`gpu_seg.viewer.open_source`); closed by :meth:`run`.
        options: :class:`ViewerOptions`.
        on_frame: called for every frame after it was drawn and before it is shown, with the
            viewer and the :class:`FrameRecord` (it may call :meth:`screenshot`).
    """

    def __init__(
        self,
        model: bytes,
        source: FrameSource,
        options: ViewerOptions | None = None,
        on_frame: Callable[[Viewer, FrameRecord], None] | None = None,
    ) -> None:
        self.options = (options or ViewerOptions()).checked()
        self.effect: Effect = self.options.effect
        self._model = model
        self._source = source
        self._on_frame = on_frame
        self._events: list[Event] = []
        self._loss_requested = False
        self._quit = False
        self._system: WindowSystem | None = None
        self._window: Window | None = None
        self._compositor: Compositor | None = None
        self._layout: Layout | None = None
        self._background: np.ndarray | None = None
        self._report = ViewerReport()
        self._fresh_window = False  # the window was just replaced by the viewer, not attached yet
        self._stamp = -1

    # ----------------------------------------------------------------------------- controls
    def request_context_loss(self) -> None:
        """Lose the window's context (destroy the window, open a new one) before the next frame."""
        self._loss_requested = True

    def next_effect(self) -> None:
        effects = list(Effect)
        self.effect = effects[(effects.index(self.effect) + 1) % len(effects)]

    def quit(self) -> None:
        self._quit = True

    def screenshot(self) -> np.ndarray:
        """uint8 ``(H, W, 3)`` RGB of the whole window as drawn for the current frame (picture on
        top, stats bar below, row 0 = top); call it from ``on_frame``."""
        if self._compositor is None or self._layout is None:
            raise InputError("screenshot", "nothing has been drawn yet")
        return self._compositor.read_screen(self._layout.window_size)

    @property
    def layout(self) -> Layout | None:
        return self._layout

    @property
    def window(self) -> Window | None:
        """The current window (a new one after each context loss); None before :meth:`run`."""
        return self._window

    @property
    def background(self) -> np.ndarray | None:
        """The replacement background at the frame's size (uint8 RGB), once the first frame came."""
        return self._background

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> ViewerReport:
        """Show frames until ``options.frames`` were drawn, the window is closed, ``Q``/``Esc`` is
        pressed, or a video without loop ends. Returns the :class:`ViewerReport`."""
        segmenter = None
        try:
            first = self._source.read()
            if first is None:
                raise InputError("input", f"no frame could be read from {self._source.name}")
            self._system = WindowSystem()
            self._prepare(first[0])
            segmenter = ImageSegmenter(
                self._model,
                output_confidence_masks=True,
                output_category_mask=False,
                running_mode="video",
                backend=self.options.backend,
                num_threads=self.options.num_threads,
                context="current",
                on_event=self._events.append,
            )
            self._loop(segmenter, first)
        finally:
            self._shut_down(segmenter)
        return self._report

    def _loop(self, segmenter: ImageSegmenter, item: tuple[np.ndarray, int] | None) -> None:
        figures = _Figures()
        pacer = _Pacer(self._source.fps if self.options.max_fps is None else self.options.max_fps)
        start = time.perf_counter()
        index = 0
        while item is not None and not self._finished(index):
            self._show(segmenter, index, *item, figures)
            index += 1
            system = self._system
            assert system is not None  # opened by run() before the loop
            system.poll()
            pacer.wait(system.poll, functools.partial(self._finished, index))
            if self._finished(index):
                break
            item = self._source.read()
        self._report.seconds = time.perf_counter() - start
        self._report.postprocessor = dict(segmenter.postprocessor.stats)

    def _show(
        self, segmenter: ImageSegmenter, index: int, frame: np.ndarray, stamp: int, figures: _Figures
    ) -> None:
        """One frame: a requested loss first, then segment, draw, report, swap."""
        if self._loss_requested or index in self.options.inject_loss_at:
            self._loss_requested = False
            self._lose_context()
        result = self._segment(segmenter, frame, stamp)
        text = figures.update(result, self._report.context_losses, self.effect)
        self._draw(frame, result, text)
        if self._on_frame is not None:
            fields = (result.confidence_masks, result.backend, result.model_ms, result.postprocess_ms)
            record = FrameRecord(
                index, self._stamp, frame, *fields, self.effect, self._report.context_losses, text
            )
            self._on_frame(self, record)
        self._window.swap()
        self._report.frames += 1
        self._report.backends[result.backend] += 1
        self._report.last_bar_text = text

    def _finished(self, index: int) -> bool:
        frames = self.options.frames
        return self._quit or self._window.should_close or (frames is not None and index >= frames)

    def _segment(self, segmenter: ImageSegmenter, frame: np.ndarray, stamp: int) -> SegmentationResult:
        """Masks for ``frame``; a loss the post-processor reports is recovered from here."""
        try:
            result = segmenter.segment_for_video(frame, self._next_stamp(stamp))
        except ContextLostError:  # backend="gl": no CPU frame; attach a live context and redo it
            result = None
        if self._take_loss_events() or result is None:
            self._recover(segmenter)
        if result is None:
            result = segmenter.segment_for_video(frame, self._next_stamp(stamp))
            self._take_loss_events()
        return result

    def _next_stamp(self, stamp: int) -> int:
        self._stamp = max(stamp, self._stamp + 1)
        return self._stamp

    def _take_loss_events(self) -> bool:
        """Log and forget the post-processor's events; did one report a context loss?"""
        events, self._events[:] = list(self._events), []
        for event in events:
            log.info("gpu_seg view: %s: %s", event.kind.value, event.reason)
        return any(event.kind == EventKind.CONTEXT_LOST for event in events)

    def _recover(self, segmenter: ImageSegmenter) -> None:
        """The post-processor lost its context, the window's: make sure the window has a new
        context (the viewer may have made it already, and counted the loss), attach the
        post-processor to it."""
        if not self._fresh_window:
            self._lose_context()
        segmenter.postprocessor.attach("current")
        self._fresh_window = False

    # ----------------------------------------------------------------------------- windows
    def _prepare(self, frame: np.ndarray) -> None:
        size = (frame.shape[1], frame.shape[0])
        self._layout = plan_layout(size, self.options.max_window)
        background = self.options.background
        self._background = fit_image(background, size) if background is not None else default_background(size)
        self._open_window()

    def _open_window(self) -> None:
        self._report.windows_opened += 1
        self._window = Window(
            self._system,
            self._layout.window_size,
            f"gpu-seg view - {self._source.name}",
            visible=self.options.visible,
            on_command=self._command,
        )
        self._layout = self._layout.fitted(self._window.framebuffer_size)
        self._compositor = Compositor(
            self._window.ctx, self.options.blur_radius, generation=self._report.windows_opened
        )
        self._compositor.set_background(self._background)

    def _lose_context(self) -> None:
        """Destroy the window and its context (a real loss, counted whatever computes the masks:
        the CPU post-processor never sees it), and open a new window."""
        self._report.context_losses += 1
        self._compositor.abandon()
        self._window.destroy()
        self._open_window()
        self._fresh_window = True

    def _command(self, command: str) -> None:
        if command == "lose-context":
            self.request_context_loss()
        elif command == "next-effect":
            self.next_effect()
        elif command == "quit":
            self.quit()

    def _draw(self, frame: np.ndarray, result: SegmentationResult, text: str) -> None:
        compositor, layout = self._compositor, self._layout
        masks = result.confidence_masks
        frame_texture = compositor.upload_frame(frame)
        mask_texture = compositor.upload_mask(masks[0])
        compositor.draw(
            frame_texture, mask_texture, self.effect, layout.picture_region, mask_is_background=len(masks) > 1
        )
        compositor.draw_bar(text, layout.bar_region, layout.text_scale)

    def _shut_down(self, segmenter: ImageSegmenter | None) -> None:
        try:
            if segmenter is not None:
                segmenter.close()  # its GL objects are released in the window's context, still current
            if self._compositor is not None and self._window is not None and self._window.handle:
                self._compositor.release()
        finally:
            if self._window is not None:
                self._window.destroy()
            if self._system is not None:
                self._system.close()
            self._source.close()
