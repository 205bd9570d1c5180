"""A synthetic video stream made from real photos: a moving window over each photo in turn.

The photos are the ones that ship in scikit-image (``skimage.data.astronaut``, ``coffee``,
``chelsea``: a person, a cup, a cat). Each scene shows one photo for ``scene_frames`` frames; a
window covering about 80 % of the photo's shorter side (at the frame's aspect ratio) drifts and
zooms slowly over it (a Lissajous path), and is sampled to the frame size with nearest-neighbour
indexing (numpy only). Frames are uint8 RGB ``(height, width, 3)``, C-contiguous.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..messages import INSTALL_BENCH

__all__ = ["PHOTOS", "SkimageUnavailableError", "frame_of", "load_photos", "photo_at_size", "photo_video"]

#: The scikit-image photos the stream is made of, in scene order.
PHOTOS = ("astronaut", "coffee", "chelsea")
#: Frames per photo before the next scene.
SCENE_FRAMES = 30


class SkimageUnavailableError(ImportError):
    """The photos come with scikit-image, which is not installed."""


def load_photos(names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    """The photos as uint8 RGB ``(H, W, 3)`` arrays.

    Raises:
        SkimageUnavailableError: scikit-image is not installed.
    """
    try:
        from skimage import data
    except ImportError as exc:
        raise SkimageUnavailableError(
            f"the video stream is made of scikit-image's photos: {INSTALL_BENCH} "
            f"(or pip install scikit-image) ({exc})"
        ) from exc
    photos = []
    for name in names:
        photo = np.asarray(getattr(data, name)())
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(photo[..., :3], dtype=np.uint8))
    return photos


def _window(
    photo_shape: tuple[int, ...], size: tuple[int, int], t: float
) -> tuple[float, float, float, float]:
    """``(x0, y0, w, h)`` of the window at phase ``t`` (0..1 over a scene) on a photo."""
    ph, pw = photo_shape[:2]
    width, height = size
    aspect = width / height
    base = 0.8 * min(pw, ph * aspect)  # window width at zoom 1, fits the photo
    zoom = 0.85 + 0.15 * math.sin(2 * math.pi * t)
    w = base * zoom
    h = w / aspect
    x0 = (pw - w) * (0.5 + 0.5 * math.sin(2 * math.pi * t * 1.0 + 0.3))
    y0 = (ph - h) * (0.5 + 0.5 * math.sin(2 * math.pi * t * 2.0))
    return x0, y0, w, h


def _sample(
    photo: np.ndarray, window: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    """The ``(x0, y0, w, h)`` window of ``photo`` at ``size`` ``(width, height)``, nearest neighbour."""
    x0, y0, w, h = window
    width, height = size
    cols = np.clip((x0 + (np.arange(width) + 0.5) * (w / width)).astype(np.intp), 0, photo.shape[1] - 1)
    rows = np.clip((y0 + (np.arange(height) + 0.5) * (h / height)).astype(np.intp), 0, photo.shape[0] - 1)
    return np.ascontiguousarray(photo[rows[:, None], cols[None, :]])


def frame_of(photo: np.ndarray, size: tuple[int, int], t: float) -> np.ndarray:
    """The frame of ``size`` ``(width, height)`` showing the window at phase ``t`` of ``photo``."""
    return _sample(photo, _window(photo.shape, size, t), size)


def photo_at_size(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred crop of ``photo`` with the aspect ratio of ``size`` ``(width, height)``,
    sampled to that size with nearest-neighbour indexing."""
    width, height = size
    ph, pw = photo.shape[:2]
    w = min(pw, ph * width / height)
    h = w * height / width
    return _sample(photo, ((pw - w) / 2, (ph - h) / 2, w, h), size)


def photo_video(
    size: tuple[int, int], photos: list[np.ndarray] | None = None, scene_frames: int = SCENE_FRAMES
) -> Iterator[np.ndarray]:
    """An endless stream of ``size`` ``(width, height)`` frames: each photo for ``scene_frames``
    frames, moving, then the next."""
    photos = photos if photos is not None else load_photos()
    index = 0
    while True:
        photo = photos[(index // scene_frames) % len(photos)]
        yield frame_of(photo, size, (index % scene_frames) / scene_frames)
        index += 1
