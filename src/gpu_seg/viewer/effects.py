"""What the viewer draws, in numpy: the specification the GL compositor is tested against.

Conventions: images are ``(H, W, 3)`` RGB, row 0 = top; colours are floats in ``[0, 1]`` (uint8
``v`` is ``v / 255``); the mask is the **foreground** probability ``m`` in ``[0, 1]``, ``(H, W)``.
The compositor writes 8-bit pixels: ``round(clamp(v, 0, 1) * 255)``.

Effects (``F`` = frame, ``B`` = background, ``m`` = mask):

* ``blur``: ``B`` = :func:`blur` of ``F``; out = ``B * (1 - m) + F * m``;
* ``replace``: ``B`` = the background image at the frame's size; out = ``B * (1 - m) + F * m``;
* ``overlay``: out = ``F * (1 - a) + T * a`` with ``a = OVERLAY_ALPHA * m`` and tint ``T`` =
  :data:`OVERLAY_TINT`.

The blur is separable, a Gaussian of fixed taps (:func:`gaussian_weights`): first along rows
(horizontal), then along columns, each tap reading the clamped neighbour (edge pixels repeat),
accumulated in float32 in tap order; the GLSL pass does exactly this (``viewer_blur.frag.glsl``).
"""

from __future__ import annotations

import enum
import functools

import numpy as np

__all__ = [
    "BAR_BACKGROUND",
    "BAR_INK",
    "OVERLAY_ALPHA",
    "OVERLAY_TINT",
    "Effect",
    "blur",
    "composite",
    "default_background",
    "foreground_probability",
    "gaussian_weights",
    "to_uint8",
]

OVERLAY_ALPHA = 0.5
OVERLAY_TINT = (0.0, 1.0, 0.0)
#: Colours of the stats bar: background and text ink (exact 8-bit values).
BAR_BACKGROUND = (16 / 255, 16 / 255, 16 / 255)
BAR_INK = (1.0, 1.0, 1.0)


class Effect(enum.StrEnum):
    """What the viewer does with the background (where the mask says "not the person")."""

    BLUR = "blur"
    REPLACE = "replace"
    OVERLAY = "overlay"

    @property
    def code(self) -> int:
        """The value of the composite shader's ``u_effect`` uniform."""
        return list(Effect).index(self)


@functools.cache
def gaussian_weights(radius: int) -> np.ndarray:
    """float32 ``(2 * radius + 1,)``: ``exp(-k^2 / (2 sigma^2))`` for ``k = -radius .. radius``,
    ``sigma = max(radius / 2, 0.5)``, divided by their sum (computed in float64, then rounded to
    float32). Read-only."""
    sigma = max(radius / 2.0, 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(k**2) / (2.0 * sigma**2))
    weights = (weights / weights.sum()).astype(np.float32)
    weights.flags.writeable = False
    return weights


def _blur_axis(image: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    radius = len(weights) // 2
    size = image.shape[axis]
    out = np.zeros_like(image)
    for k, weight in enumerate(weights):
        source = np.clip(np.arange(size) + k - radius, 0, size - 1)
        out += weight * np.take(image, source, axis=axis)
    return out


def blur(image: np.ndarray, radius: int) -> np.ndarray:
    """float32 ``(H, W, 3)``: ``image`` (float32, values in [0, 1]) blurred along rows, then
    columns, with :func:`gaussian_weights` and clamped edges."""
    weights = gaussian_weights(radius)
    rows = _blur_axis(np.asarray(image, np.float32), weights, axis=1)
    return _blur_axis(rows, weights, axis=0)


def foreground_probability(confidence_masks: np.ndarray) -> np.ndarray:
    """The foreground mask ``(H, W)`` from a segmenter's confidence masks ``(C, H, W)``.

    One channel (the selfie models): the channel itself. Several: ``1 - channel 0`` (channel 0
    is the background class of MediaPipe's multi-class models).
    """
    if confidence_masks.shape[0] == 1:
        return confidence_masks[0]
    return 1.0 - confidence_masks[0]


def default_background(size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(height, width, 3)`` RGB: the replacement background when none is given (a vertical
    gradient from deep blue at the top to warm orange at the bottom)."""
    width, height = size
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array([30, 50, 110], np.float32), np.array([220, 140, 70], np.float32)
    column = np.rint(top * (1.0 - t) + bottom * t).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(column, (height, width, 3)))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """``round(clamp(v, 0, 1) * 255)`` as uint8: what an 8-bit framebuffer stores."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def composite(
    frame: np.ndarray,
    mask: np.ndarray,
    effect: Effect | str,
    background: np.ndarray | None = None,
    blur_radius: int = 12,
) -> np.ndarray:
    """uint8 ``(H, W, 3)``: the viewer's picture for ``frame`` (uint8 RGB) and ``mask`` (float
    ``(H, W)``, foreground probability); ``background``: uint8 RGB at the frame's size, for
    ``replace``. See the module docstring for the formulas."""
    effect = Effect(effect)
    f = frame.astype(np.float32) / np.float32(255.0)
    m = np.clip(mask.astype(np.float32), 0.0, 1.0)[..., None]
    if effect is Effect.OVERLAY:
        a = np.float32(OVERLAY_ALPHA) * m
        out = f * (1.0 - a) + np.asarray(OVERLAY_TINT, np.float32) * a
    else:
        if effect is Effect.BLUR:
            b = blur(f, blur_radius)
        elif background is None:
            raise ValueError("effect 'replace' needs a background image")
        else:
            b = background.astype(np.float32) / np.float32(255.0)
        out = b * (1.0 - m) + f * m
    return to_uint8(out)
