"""Where the viewer's frames come from: a video file, an image, or a camera (OpenCV).

A source gives uint8 ``(H, W, 3)`` RGB frames (row 0 = top) and their timestamps in ms, strictly
increasing as the segmenter's video mode requires. A video file starts again at its end when
``loop`` is set (the timestamps go on increasing); an image is every frame; a camera is read live
and stamped with the wall clock.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..segmenter import files
from ..segmenter.batch import DEFAULT_FPS, VIDEO_SUFFIXES
from ..segmenter.damage import container_truncation

if TYPE_CHECKING:
    import cv2

__all__ = ["FrameSource", "fit_image", "open_source", "read_image", "save_image"]


def read_image(path: str | os.PathLike[str], argument: str) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB of an image file, or InputError(argument): read as ``gpu-seg segment``
    reads images (any file name; a damaged file is refused, not half-decoded)."""
    cv2 = files.opencv()
    try:
        pixels = files.read_image(cv2, Path(path))
    except OSError as exc:
        raise InputError(argument, str(exc)) from None
    if pixels is None:
        raise InputError(argument, f"OpenCV cannot read an image from {str(path)!r}")
    return pixels


def save_image(path: str | os.PathLike[str], image: np.ndarray, argument: str) -> None:
    """Write uint8 ``(H, W, 3)`` RGB to an image file (format from the suffix), or InputError(argument)."""
    cv2 = files.opencv()
    try:
        encoded, data = cv2.imencode(files.plain_suffix(path), np.ascontiguousarray(image[..., ::-1]))
    except cv2.error as exc:
        raise InputError(argument, f"OpenCV cannot write {str(path)!r}: {exc}") from None
    if not encoded:
        raise InputError(argument, f"OpenCV could not write {str(path)!r}")
    try:
        Path(path).write_bytes(data.tobytes())  # by Python: OpenCV crashes on names that are not UTF-8
    except OSError as exc:
        raise InputError(argument, f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def fit_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (uint8 RGB) resized to ``size`` (width, height) with OpenCV: area averaging when
    it shrinks, bilinear when it grows; the image itself when it has that size already."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return np.ascontiguousarray(image)
    cv2 = files.opencv()
    shrinks = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


class FrameSource:
    """Frames of a video file, an image or a camera; create with :func:`open_source`.

    Attributes:
        name: what is shown (file name or ``camera N``).
        fps: the source's own frame rate (None for a camera: it delivers at its own pace).
    """

    def __init__(
        self,
        name: str,
        fps: float | None,
        capture: cv2.VideoCapture | None = None,
        image: np.ndarray | None = None,
        loop: bool = False,
    ) -> None:
        self.name = name
        self.fps = fps
        self._capture = capture
        self._image = image
        self._loop = loop
        self._index = 0
        self._first: np.ndarray | None = None  # a video's first frame, while it may be its only one
        self._last_ms = -1
        self._start = time.monotonic()

    def read(self) -> tuple[np.ndarray, int] | None:
        """The next ``(frame, timestamp_ms)``, or None when a video without ``loop`` ended (or a
        camera stopped delivering)."""
        if self._image is not None:
            frame = self._image
        else:
            frame = self._read_capture()
            if frame is None:
                return None
        if self.fps is None:
            stamp = round((time.monotonic() - self._start) * 1e3)
        else:
            stamp = round(self._index * 1e3 / self.fps)
        self._index += 1
        self._last_ms = max(stamp, self._last_ms + 1)
        return frame, self._last_ms

    def _read_capture(self) -> np.ndarray | None:
        ok, bgr = self._capture.read()
        if not ok and self._loop and self._index > 0:  # a video file at its end: from the start
            self._capture.set(files.opencv().CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._capture.read()
            if not ok and self._index == 1:  # OpenCV cannot rewind a one-frame video: an image
                self._image = self._first
                return self._first
        frame = np.ascontiguousarray(bgr[..., ::-1]) if ok else None
        self._first = frame if self._index == 0 else None  # kept until a second frame is read
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def open_source(
    path: str | os.PathLike[str] | None = None, camera: int | None = None, loop: bool = True
) -> FrameSource:
    """A source for a video or image file (``path``) or a camera (``camera`` index); exactly one.

    Raises:
        InputError: neither or both given, a file that is missing or unreadable (``"input"``), a
            camera that cannot be opened (``"camera"``).
    """
    if (path is None) == (camera is None):
        raise InputError("input", "give either a file or a camera index")
    cv2 = files.opencv()
    if camera is not None:
        try:
            capture = cv2.VideoCapture(int(camera))
        except (cv2.error, OverflowError):  # an index beyond a C int
            raise InputError("camera", f"camera {camera} cannot be opened (is there one?)") from None
        if not capture.isOpened():
            capture.release()
            raise InputError("camera", f"camera {camera} cannot be opened (is there one?)")
        return FrameSource(f"camera {camera}", None, capture=capture)
    file = Path(path)
    if not file.is_file():
        raise InputError("input", f"no such file: {file}")
    if file.suffix.lower() not in VIDEO_SUFFIXES:
        return FrameSource(file.name, DEFAULT_FPS, image=read_image(file, "input"))
    problem = container_truncation(file)
    if problem:
        raise InputError("input", f"{problem}: {file}")
    with files.opencv_path(file) as name:  # the capture keeps the file open once it has opened it
        capture = cv2.VideoCapture(name)
    if not capture.isOpened():
        capture.release()
        raise InputError("input", f"OpenCV cannot read a video from {str(file)!r}")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS
    return FrameSource(file.name, fps, capture=capture, loop=loop)
