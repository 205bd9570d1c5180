"""What the bench times: presets modelled on MediaPipe's segmentation models and their tensors.

Each preset (or custom shape) gives a model-like tensor (smooth class regions, mostly background)
and, optionally, an i.i.d.-noise tensor (the worst case for content-dependent shortcuts), each
timed in some output modes. Tensors are float32 ``(H, W, C)``; output sizes are ``(width, height)``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...inputs import parse_activation
from ...reference import resize_plane
from ...types import Activation

__all__ = [
    "MODES",
    "NOISE_MODES",
    "PRESETS",
    "VARIANT_PRESETS",
    "BenchCase",
    "Preset",
    "boundary_fraction",
    "build_cases",
    "custom_preset",
    "iid_noise_tensor",
    "model_like_tensor",
]


@dataclass(frozen=True)
class Preset:
    """A model's output tensor and the mask size an application typically asks for."""

    name: str
    tensor_shape: tuple[int, int, int]  # (H, W, C)
    output_size: tuple[int, int]  # (width, height)
    activation: str
    model: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("selfie", (256, 256, 1), (640, 480), "sigmoid", "SelfieSegmenter (square)"),
        Preset("hair", (512, 512, 2), (1280, 720), "softmax", "HairSegmenter"),
        Preset("multiclass", (256, 256, 6), (1280, 720), "softmax", "SelfieMulticlass 256x256"),
        Preset("deeplab", (257, 257, 21), (1920, 1080), "softmax", "DeepLab-V3"),
    )
}

#: Output modes: name -> (confidence masks, category mask).
MODES: dict[str, tuple[bool, bool]] = {
    "both": (True, True),
    "category": (False, True),
    "confidence": (True, False),
}
#: Output modes timed on the i.i.d.-noise tensors (content matters most for the category mask).
NOISE_MODES = ("both", "category")
#: Presets that get the GL variant rows by default.
VARIANT_PRESETS = ("multiclass", "deeplab")


def custom_preset(
    tensor_shape: tuple[int, int, int],
    output_size: tuple[int, int] | None = None,
    activation: str | None = None,
) -> Preset:
    """A preset named ``custom``: output size defaults to the tensor's, activation to sigmoid for one
    channel and softmax otherwise."""
    h, w, c = tensor_shape
    return Preset(
        "custom",
        (h, w, c),
        output_size or (w, h),
        activation or ("sigmoid" if c == 1 else "softmax"),
        "custom tensor",
    )


# ----------------------------------------------------------------------------- tensors
def model_like_tensor(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    cell: int = 32,
    scale: float = 8.0,
    present: int = 4,
) -> np.ndarray:
    """Logits that look like a segmentation model's output: smooth class regions, mostly background.

    Low-resolution Gaussian noise (one value per ``cell`` texels) is upsampled bilinearly to
    ``(H, W)`` and scaled to logits of magnitude ~``scale``. Channel 0 (background) is biased up
    and only ``present`` other classes compete with it (the rest are biased down, as in a real
    scene); a one-channel tensor is biased negative (background = value below the threshold).
    """
    h, w, c = shape
    gh, gw = max(2, round(h / cell)), max(2, round(w / cell))
    coarse = rng.standard_normal((gh, gw, c)).astype(np.float32)
    if c == 1:
        coarse -= np.float32(0.5)
    else:
        coarse[..., 0] += np.float32(1.2)
        if c - 1 > present:  # like a real scene: only a few of many classes appear
            absent = rng.choice(np.arange(1, c), size=c - 1 - present, replace=False)
            coarse[..., absent] -= np.float32(2.5)
    out = np.empty((h, w, c), np.float32)
    for k in range(c):
        out[..., k] = resize_plane(np.ascontiguousarray(coarse[..., k]), w, h)
    out *= np.float32(scale)
    return out


def iid_noise_tensor(shape: tuple[int, int, int], rng: np.random.Generator, scale: float = 4.0) -> np.ndarray:
    """The worst case for content-dependent shortcuts: independent Gaussian logits per texel."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def class_map(tensor: np.ndarray, activation: Activation | str) -> np.ndarray:
    """The class of every input texel: first argmax; one channel: activated value > 0.5."""
    activation = parse_activation(activation)
    if tensor.shape[2] == 1:
        x = tensor[..., 0]
        if activation is Activation.SIGMOID:
            return x > 0
        if activation is Activation.SOFTMAX:
            return np.ones(x.shape, bool)
        return x > 0.5
    return np.argmax(tensor, axis=-1)


def boundary_fraction(tensor: np.ndarray, activation: Activation | str) -> float:
    """Fraction of input texels whose class differs from one of their 4-neighbours."""
    labels = class_map(tensor, activation)
    edge = np.zeros(labels.shape, bool)
    vertical = labels[:-1] != labels[1:]
    edge[:-1] |= vertical
    edge[1:] |= vertical
    horizontal = labels[:, :-1] != labels[:, 1:]
    edge[:, :-1] |= horizontal
    edge[:, 1:] |= horizontal
    return float(edge.mean())


# ----------------------------------------------------------------------------- cases
@dataclass
class BenchCase:
    """One tensor, timed in every output mode of ``modes`` by every backend."""

    preset: str
    tensor: np.ndarray
    activation: str
    output_size: tuple[int, int]
    content: str  # "model-like" or "iid-noise"
    boundary_fraction: float
    variants: bool = False
    modes: tuple[str, ...] = tuple(MODES)
    _model: bytes | None = None
    #: Why none of this case's rows can run (the end-to-end case when a part is missing).
    unavailable: str | None = None
    #: What the end-to-end rows run on (model bytes, image, video frames); empty for tensor cases.
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w, c = self.tensor.shape
        return int(h), int(w), int(c)

    @property
    def channels(self) -> int:
        return self.shape[2]

    def title(self) -> str:
        h, w, c = self.shape
        width, height = self.output_size
        return (
            f"{self.preset} {h}x{w}x{c} {self.activation} -> {width}x{height} "
            f"{self.content} (boundary texels {100 * self.boundary_fraction:.2f} %)"
        )

    def mediapipe_model(self) -> bytes:
        """The constant TFLite model whose output is this tensor (built once per case)."""
        if self._model is None:
            from ..oracle import build_constant_model

            self._model = build_constant_model(self.tensor, self.activation)
        return self._model

    def to_dict(self) -> dict:
        """The ``tensors`` entry of the report."""
        return {
            "preset": self.preset,
            "tensor_shape": list(self.shape),
            "output_size": list(self.output_size),
            "activation": self.activation,
            "content": self.content,
            "boundary_fraction": self.boundary_fraction,
        }


def _case(preset: Preset, content: str, seed: int, variants: bool, modes: tuple[str, ...]) -> BenchCase:
    """The ``content`` tensor of ``preset``, seeded by ``seed``, the preset name and the content kind."""
    rng = np.random.default_rng([seed, zlib.crc32(preset.name.encode()), zlib.crc32(content.encode())])
    make = model_like_tensor if content == "model-like" else iid_noise_tensor
    tensor = make(preset.tensor_shape, rng)
    fraction = boundary_fraction(tensor, preset.activation)
    return BenchCase(
        preset.name, tensor, preset.activation, preset.output_size, content, fraction, variants, modes
    )


def build_cases(
    presets: Iterable[Preset],
    modes: Sequence[str] = tuple(MODES),
    seed: int = 0,
    noise: bool = True,
    variants: bool | None = None,
) -> list[BenchCase]:
    """One model-like case per preset, followed by its i.i.d.-noise case (modes in ``NOISE_MODES``).

    Tensors are seeded by ``seed``, the preset name and the content kind, so a preset gets the same
    tensors whatever else runs. ``variants`` (GL f16/u8/subset rows, model-like cases only)
    defaults to on for ``VARIANT_PRESETS``.
    """
    modes = tuple(dict.fromkeys(modes))
    noise_modes = tuple(m for m in modes if m in NOISE_MODES)
    cases = []
    for preset in presets:
        with_variants = variants if variants is not None else preset.name in VARIANT_PRESETS
        cases.append(_case(preset, "model-like", seed, with_variants, modes))
        if noise and noise_modes:
            cases.append(_case(preset, "iid-noise", seed, False, noise_modes))
    return cases
