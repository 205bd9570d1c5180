"""Files of ``gpu-seg segment``: finding inputs and naming outputs, reading images and videos, writing
outputs whole, encoding masks. Used by :mod:`.batch` and by ``gpu_seg.distributed``; OpenCV (``cv2``)
is imported when first needed.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import GpuSegError

__all__ = [
    "IMAGE_SUFFIXES",
    "PARTIAL_SUFFIX",
    "VIDEO_SUFFIXES",
    "LocalOutput",
    "OpenCVUnavailableError",
    "Output",
    "encode_npy",
    "encode_png",
    "estimate_frames",
    "find_inputs",
    "is_video",
    "opencv",
    "output_names",
    "overlay",
    "read_image",
    "seek",
    "video_frame_count",
]

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
IMAGE_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".gif",
        ".ppm",
        ".pgm",
        ".pnm",
        ".jp2",
        ".exr",
    }
)
#: Suffix of a file being written (renamed to its name once complete).
PARTIAL_SUFFIX = ".partial"
#: Overlay tint (RGB) per class for multi-class models (class 0 is left untinted).
_PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    np.uint8,
)
_FOREGROUND_TINT = np.array([0, 255, 0], np.uint8)


class OpenCVUnavailableError(GpuSegError, ImportError):
    """Reading and writing image/video files needs OpenCV (``cv2``)."""


def opencv():
    """The ``cv2`` module, or :class:`OpenCVUnavailableError`."""
    try:
        import cv2
    except ImportError as exc:
        raise OpenCVUnavailableError(
            f"gpu-seg segment reads and writes files with OpenCV: pip install opencv-python-headless ({exc})"
        ) from exc
    return cv2


def find_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, plus the image and video files inside folders named (recursively, sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                    found.append(child)
        else:
            found.append(path)
    return found


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether a file is read as a video (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def video_frame_count(path: str | os.PathLike[str]) -> int:
    """The container's frame count (a guess: 0 when it gives none or cannot be opened)."""
    cv2 = opencv()
    capture = cv2.VideoCapture(str(path))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0
    finally:
        capture.release()
    return max(0, int(count)) if np.isfinite(count) else 0


def estimate_frames(paths: Iterable[Path]) -> int:
    """Frames a run will segment: 1 per image, the container's frame count per video (a guess)."""
    return sum(max(1, video_frame_count(path)) if is_video(path) else 1 for path in paths)


def output_names(paths: Iterable[str | os.PathLike[str]], taken: set[str] | None = None) -> list[str]:
    """A unique output name per input, in order: the stem, else ``stem_ext``, else ``stem_2``...

    Args:
        paths: the inputs, in run order.
        taken: names already used (updated in place with the new ones).
    """
    taken = set() if taken is None else taken
    numbers: dict[str, int] = {}  # per stem: every stem_i below it is taken already
    names = []
    for raw in paths:
        path = Path(raw)
        stem = path.stem
        name = next((c for c in (stem, f"{stem}_{path.suffix.lstrip('.')}") if c and c not in taken), None)
        if name is None:
            number = numbers.get(stem, 2)
            while f"{stem}_{number}" in taken:
                number += 1
            numbers[stem] = number + 1
            name = f"{stem}_{number}"
        taken.add(name)
        names.append(name)
    return names


class Output(Protocol):
    """Where output files go: ``write`` stores ``data`` whole under a ``/``-separated relative path."""

    def write(self, relative: str, data: bytes) -> None: ...


class LocalOutput:
    """Output files under a local folder; each written to ``FILE.partial``, then renamed over ``FILE``.

    A writer killed midway leaves at most a ``.partial`` file, which the next write of the same
    file replaces; a reader never sees half a file under its real name.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        with open(partial, "wb") as stream:
            stream.write(data)
        os.replace(partial, path)


def read_image(cv2, path: Path) -> np.ndarray | None:
    """RGB uint8 ``(H, W, 3)``, or None when neither OpenCV nor imageio reads it as an image."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is not None:
        return np.ascontiguousarray(bgr[..., ::-1])
    try:
        import imageio.v3 as iio

        with warnings.catch_warnings():  # imageio's plugins warn while probing a file
            warnings.simplefilter("ignore")
            pixels = np.asarray(iio.imread(path))
    except Exception:  # imageio missing, or it cannot read the file either
        return None
    return _as_rgb8(pixels)


def seek(cv2, capture, path: str, start: int):
    """``capture`` positioned so that the next read returns frame ``start``.

    OpenCV seeks to the frame number (exact on the containers tried: MJPEG AVI, MPEG-4 Part 2 in
    MP4 and AVI); where the position it reports differs, the video is read from the start instead.
    """
    if start <= 0:
        return capture
    if capture.set(cv2.CAP_PROP_POS_FRAMES, start) and int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == start:
        return capture
    capture.release()
    capture = cv2.VideoCapture(path)
    for _ in range(start):
        if not capture.grab():
            break
    return capture


def encode_png(cv2, pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise OSError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _as_rgb8(pixels: np.ndarray) -> np.ndarray | None:
    """imageio's pixels as uint8 RGB, or None for what is not an 8-bit still image."""
    if pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 4:  # an animation: its first frame
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        return None
    return np.ascontiguousarray(pixels[..., :3])


def overlay(image: np.ndarray, category_mask: np.ndarray, one_class: bool, alpha: float = 0.5) -> np.ndarray:
    """The RGB image with the category mask tinted over it (uint8 ``(H, W, 3)``).

    One-class models (mask values 0 and 255): foreground (0) in green. Several classes: class
    k > 0 in a palette colour; class 0 (usually background) untinted.
    """
    if one_class:
        tint = np.broadcast_to(_FOREGROUND_TINT, image.shape)
        tinted = category_mask == 0
    else:
        tint = _PALETTE[1 + (category_mask.astype(np.intp) - 1) % (len(_PALETTE) - 1)]
        tinted = category_mask != 0
    blended = image * (1.0 - alpha) + tint * alpha
    return np.where(tinted[..., None], np.round(blended), image).astype(np.uint8)
