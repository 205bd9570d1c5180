"""Shared machinery of ``gpu-seg bench`` and ``gpu-seg verify``.

* Presets modelled on MediaPipe's segmentation models and the synthetic tensors the bench uses
  (:func:`model_like_tensor`, :func:`iid_noise_tensor`, :func:`boundary_fraction`).
* The backends timed side by side (:func:`make_runner`): gpu_seg GL and CPU, and the peers a user
  would otherwise write: OpenCV + numpy, PyTorch CPU and real MediaPipe CPU (``ImageSegmenter`` on
  a constant model from :mod:`gpu_seg.oracle`).
* Timing statistics, the machine's copy bandwidth, environment metadata and the performance goals.
* The parity rule of the core issue (:func:`parity`): confidence ``|diff| <= 2e-5`` (plus ``1e-5``
  relative with activation none), category identical except at near ties (top two align-corners
  interpolated values closer than ``1e-5``); one-class category masks must be identical.

Everything optional (OpenCV, PyTorch, MediaPipe, matplotlib) is imported lazily; a backend that
cannot be imported is reported as unavailable with the reason.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import parse_activation
from .parity import (
    Parity,
    category_margin,
    confidence_error,
    far_from_ties,
    parity,
)
from .reference import resize_plane
from .types import Activation

__all__ = [
    "BACKENDS",
    "MODES",
    "PRESETS",
    "BenchCase",
    "BenchRow",
    "Parity",
    "Preset",
    "Runner",
    "boundary_fraction",
    "category_margin",
    "environment",
    "evaluate_goals",
    "iid_noise_tensor",
    "make_runner",
    "measure_copy_bandwidth",
    "model_like_tensor",
    "parity",
    "summarize",
]

INSTALL_MEDIAPIPE = 'pip install "gpu_seg[mediapipe]"'
INSTALL_BENCH = 'pip install "gpu_seg[bench]"'


# ----------------------------------------------------------------------------- presets
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

#: Backend keys -> labels, in table order. ``gl_*`` keys after ``gl`` are variants of the GL path.
BACKENDS: dict[str, str] = {
    "gl": "gpu_seg GL",
    "gl_alloc": "gpu_seg GL (no prealloc)",
    "cpu": "gpu_seg CPU",
    "opencv": "OpenCV",
    "torch": "PyTorch CPU",
    "mediapipe": "MediaPipe CPU",
    "gl_f16": "gpu_seg GL f16 conf",
    "gl_u8": "gpu_seg GL u8 conf",
    "gl_subset": "gpu_seg GL 1-channel conf",
}

#: The GL variants: key -> (processor keyword arguments, what they need).
VARIANTS: dict[str, dict[str, Any]] = {
    "gl_f16": {"confidence_dtype": "float16"},
    "gl_u8": {"confidence_dtype": "uint8"},
    "gl_subset": {"confidence_channels": [1]},
}

_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


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


@dataclass
class BenchCase:
    """One tensor, timed in every output mode by every backend."""

    preset: str
    tensor: np.ndarray
    activation: str
    output_size: tuple[int, int]
    content: str  # "model-like" or "iid-noise"
    boundary_fraction: float
    variants: bool = False
    modes: tuple[str, ...] = tuple(MODES)
    _model: bytes | None = None

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
            from .oracle import build_constant_model

            self._model = build_constant_model(self.tensor, self.activation)
        return self._model


# ----------------------------------------------------------------------------- statistics
def summarize(samples_ms: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range (linear-interpolated percentiles) of ``samples_ms``."""
    values = np.asarray(samples_ms, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(median), float(q3 - q1)


def measure_copy_bandwidth(mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """The machine's memory bandwidth as seen by ``np.copyto`` of a ``mib`` MiB buffer.

    Returns ``gbps`` (bytes read + bytes written per second / 1e9, median of ``repeats`` copies after
    one warm-up copy), ``median_ms``, ``buffer_mib`` and ``repeats``.
    """
    n = max(1, int(mib)) << 20
    src = np.ones(n, np.uint8)
    dst = np.zeros(n, np.uint8)
    np.copyto(dst, src)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "gbps": 2 * n / median / 1e9,
        "median_ms": median * 1e3,
        "buffer_mib": float(mib),
        "repeats": repeats,
    }


# ----------------------------------------------------------------------------- backends
def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (shader build errors carry the whole source)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


class BackendUnavailableError(Exception):
    """A backend cannot run here (not installed, no GL, option not supported); the message says why."""


@dataclass
class Runner:
    """A prepared backend for one case and output mode: ``runner()`` is what gets timed."""

    key: str
    label: str
    call: Callable[[], None]
    outputs: Callable[[], tuple[Sequence[np.ndarray] | np.ndarray | None, np.ndarray | None]]
    bytes_out: int
    close: Callable[[], None] = lambda: None
    note: str = ""
    #: The reference channels the confidence planes hold (None: all of them).
    channels: tuple[int, ...] | None = None

    def __call__(self) -> None:
        self.call()


def _float32_outputs(case: BenchCase, mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    conf, cat = MODES[mode]
    width, height = case.output_size
    return (
        np.empty((case.channels, height, width), np.float32) if conf else None,
        np.empty((height, width), np.uint8) if cat else None,
    )


def _nominal_bytes_out(case: BenchCase, mode: str) -> int:
    conf, cat = MODES[mode]
    width, height = case.output_size
    return (4 * case.channels * width * height if conf else 0) + (width * height if cat else 0)


class ProcessorPool:
    """gpu_seg processors, one per configuration, shared by the runners of a cell.

    :meth:`close` releases them; a GL start-up failure is remembered across :meth:`close`, so an
    unavailable GL is not retried for every cell.
    """

    def __init__(self) -> None:
        self._processors: dict[tuple, Any] = {}
        self.gl_error: str | None = None
        self.context_info: Any = None

    def get(self, backend: str, activation: str, mode: str, options: dict[str, Any] | None = None) -> Any:
        from .postprocessor import SegmentationPostprocessor

        options = options or {}
        key = (backend, activation, mode, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key in self._processors:
            return self._processors[key]
        if backend == "gl" and self.gl_error is not None:
            raise BackendUnavailableError(self.gl_error)
        unknown = [
            name for name in options if name not in inspect.signature(SegmentationPostprocessor).parameters
        ]
        if unknown:
            raise BackendUnavailableError(
                f"SegmentationPostprocessor has no {', '.join(unknown)} option (yet)"
            )
        conf, cat = MODES[mode]
        try:
            processor = SegmentationPostprocessor(
                activation,
                output_confidence_masks=conf,
                output_category_mask=cat,
                backend=backend,  # type: ignore[arg-type]
                **options,
            )
        except Exception as exc:
            if backend == "gl" and not options:
                self.gl_error = f"GL unavailable: {first_line(exc)}"
                raise BackendUnavailableError(self.gl_error) from exc
            raise BackendUnavailableError(first_line(exc)) from exc
        if backend == "gl" and self.context_info is None:
            self.context_info = processor.context_info
        self._processors[key] = processor
        return processor

    def close(self) -> None:
        for processor in self._processors.values():
            processor.close()
        self._processors.clear()


def _gpu_seg_runner(
    pool: ProcessorPool, key: str, case: BenchCase, mode: str, preallocate: bool = True
) -> Runner:
    backend = "cpu" if key == "cpu" else "gl"
    options = dict(VARIANTS.get(key, {}))
    if key == "gl_subset":
        if case.channels < 2:
            raise BackendUnavailableError("a channel subset needs at least two channels")
        options["confidence_channels"] = [1]
    processor = pool.get(backend, case.activation, mode, options)
    conf, cat = MODES[mode]
    width, height = case.output_size
    channels = len(options.get("confidence_channels", range(case.channels)))
    dtype = _DTYPES[str(options.get("confidence_dtype", "float32"))]
    conf_out = np.empty((channels, height, width), dtype) if conf and preallocate else None
    cat_out = np.empty((height, width), np.uint8) if cat and preallocate else None
    tensor, size = case.tensor, case.output_size
    last: dict[str, Any] = {}
    note = ""

    def call() -> None:
        result = processor.process(tensor, size, confidence_out=conf_out, category_out=cat_out)
        last["result"] = result

    # One untimed frame: checks that the options and preallocated outputs are accepted, and
    # that the frame ran where it should (GL, not a CPU fallback).
    try:
        call()
    except (TypeError, ValueError) as exc:
        if not preallocate or not options:
            raise BackendUnavailableError(first_line(exc)) from exc
        conf_out = cat_out = None
        note = f"outputs not preallocated ({exc})"
        try:
            call()
        except Exception as exc2:
            raise BackendUnavailableError(first_line(exc2)) from exc2
    except Exception as exc:
        raise BackendUnavailableError(first_line(exc)) from exc
    if last["result"].backend != backend:
        raise BackendUnavailableError(f"the frame ran on {last['result'].backend!r}, not {backend!r}")
    result = last["result"]
    bytes_out = sum(a.nbytes for a in (result.confidence_masks, result.category_mask) if a is not None)
    return Runner(
        key,
        BACKENDS[key],
        call,
        lambda: (last["result"].confidence_masks, last["result"].category_mask),
        bytes_out,
        note=note,
        channels=tuple(options["confidence_channels"]) if "confidence_channels" in options else None,
    )


def _numpy_activation(tensor: np.ndarray, activation: Activation) -> np.ndarray:
    """Activated planes ``(C, H, W)`` at tensor resolution, written the way a numpy user would."""
    planes = np.ascontiguousarray(tensor.transpose(2, 0, 1))
    if activation is Activation.SOFTMAX:
        e = np.exp(planes - planes.max(axis=0, keepdims=True))
        e /= e.sum(axis=0, keepdims=True)
        return e
    if activation is Activation.SIGMOID:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-planes))
    return planes


def _one_class_threshold(activation: Activation) -> float:
    """The logit above which a one-class pixel is foreground (MediaPipe: activated value > 0.5)."""
    if activation is Activation.SIGMOID:
        return 0.0
    if activation is Activation.SOFTMAX:
        return -np.inf  # softmax of one channel is 1.0
    return 0.5


def _opencv_runner(case: BenchCase, mode: str) -> Runner:
    try:
        cv2 = importlib.import_module("cv2")
    except ImportError as exc:
        raise BackendUnavailableError(f"OpenCV is not installed ({INSTALL_BENCH})") from exc
    activation = parse_activation(case.activation)
    tensor, (width, height) = case.tensor, case.output_size
    conf_out, cat_out = _float32_outputs(case, mode)
    threshold = _one_class_threshold(activation)
    linear = cv2.INTER_LINEAR

    def resize_hwc(x: np.ndarray) -> np.ndarray:
        if x.shape[2] <= 512:  # OpenCV's channel limit
            out = cv2.resize(x, (width, height), interpolation=linear)
            return out[..., None] if out.ndim == 2 else out
        return np.concatenate([resize_hwc(x[..., i : i + 512]) for i in range(0, x.shape[2], 512)], axis=-1)

    def call() -> None:
        if conf_out is not None:
            planes = _numpy_activation(tensor, activation)
            for c in range(planes.shape[0]):
                cv2.resize(planes[c], (width, height), dst=conf_out[c], interpolation=linear)
        if cat_out is not None:
            logits = resize_hwc(tensor)
            if logits.shape[2] == 1:
                np.copyto(cat_out, np.where(logits[..., 0] > threshold, 0, 255).astype(np.uint8))
            else:
                np.copyto(cat_out, np.argmax(logits, axis=-1).astype(np.uint8))

    return Runner(
        "opencv", BACKENDS["opencv"], call, lambda: (conf_out, cat_out), _nominal_bytes_out(case, mode)
    )


def _torch_runner(case: BenchCase, mode: str) -> Runner:
    try:
        torch = importlib.import_module("torch")
        functional = importlib.import_module("torch.nn.functional")
    except ImportError as exc:
        raise BackendUnavailableError("PyTorch is not installed (optional peer: pip install torch)") from exc
    activation = parse_activation(case.activation)
    tensor, (width, height) = case.tensor, case.output_size
    conf, cat = MODES[mode]
    threshold = _one_class_threshold(activation)
    last: dict[str, Any] = {"conf": None, "cat": None}

    def call() -> None:
        nhwc = torch.from_numpy(tensor)
        with torch.inference_mode():
            if conf:
                # Channels-last view of the HWC tensor: the fastest input layout for the resize.
                x = nhwc.permute(2, 0, 1).unsqueeze(0)
                if activation is Activation.SOFTMAX:
                    x = torch.softmax(x, dim=1)
                elif activation is Activation.SIGMOID:
                    x = torch.sigmoid(x)
                up = functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
                last["conf"] = up[0].contiguous().numpy()
            if cat:
                # Contiguous NCHW: argmax(dim=1) is ~2x faster on it than on the channels-last view.
                x = nhwc.permute(2, 0, 1).unsqueeze(0).contiguous()
                up = functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
                if up.shape[1] == 1:
                    mask = torch.where(up[0, 0] > threshold, 0, 255).to(torch.uint8)
                else:
                    mask = up[0].argmax(dim=0).to(torch.uint8)
                last["cat"] = mask.numpy()

    return Runner(
        "torch", BACKENDS["torch"], call, lambda: (last["conf"], last["cat"]), _nominal_bytes_out(case, mode)
    )


def _mediapipe_runner(case: BenchCase, mode: str) -> Runner:
    from . import oracle

    if not oracle.mediapipe_available():
        raise BackendUnavailableError(f"MediaPipe is not installed ({INSTALL_MEDIAPIPE})")
    conf, cat = MODES[mode]
    width, height = case.output_size
    if cat and 1 in (width, height):
        raise BackendUnavailableError("MediaPipe's category mask crashes on an output width or height of 1")
    base_options = importlib.import_module("mediapipe.tasks.python.core.base_options")
    running_mode = importlib.import_module("mediapipe.tasks.python.vision.core.vision_task_running_mode")
    image_module = importlib.import_module("mediapipe.tasks.python.vision.core.image")
    segmenter_module = importlib.import_module("mediapipe.tasks.python.vision.image_segmenter")
    options_cls = base_options.BaseOptions
    options = segmenter_module.ImageSegmenterOptions(
        base_options=options_cls(
            model_asset_buffer=case.mediapipe_model(), delegate=options_cls.Delegate.CPU
        ),
        running_mode=running_mode.VisionTaskRunningMode.IMAGE,
        output_confidence_masks=conf,
        output_category_mask=cat,
    )
    try:
        segmenter = segmenter_module.ImageSegmenter.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(f"MediaPipe's ImageSegmenter failed: {exc}") from exc
    image = image_module.Image(image_module.ImageFormat.SRGB, np.zeros((height, width, 3), np.uint8))
    last: dict[str, Any] = {}

    def call() -> None:
        last["result"] = segmenter.segment(image)

    def outputs() -> tuple[list[np.ndarray] | None, np.ndarray | None]:
        result = last.get("result")
        if result is None:
            return None, None
        confidence = None
        if conf and result.confidence_masks:
            confidence = [np.asarray(m.numpy_view()).reshape(height, width) for m in result.confidence_masks]
        category = None
        if cat and result.category_mask is not None:
            category = np.array(np.asarray(result.category_mask.numpy_view()).reshape(height, width))
        return confidence, category

    def close() -> None:
        last.clear()
        segmenter.close()

    return Runner("mediapipe", BACKENDS["mediapipe"], call, outputs, _nominal_bytes_out(case, mode), close)


def make_runner(pool: ProcessorPool, key: str, case: BenchCase, mode: str) -> Runner:
    """Prepare backend ``key`` for ``case`` in output ``mode``.

    Raises:
        BackendUnavailableError: the backend cannot run here; the message says why.
    """
    if key in ("gl", "cpu") or key in VARIANTS:
        return _gpu_seg_runner(pool, key, case, mode)
    if key == "gl_alloc":
        runner = _gpu_seg_runner(pool, "gl", case, mode, preallocate=False)
        runner.key, runner.label = "gl_alloc", BACKENDS["gl_alloc"]
        return runner
    if key == "opencv":
        return _opencv_runner(case, mode)
    if key == "torch":
        return _torch_runner(case, mode)
    if key == "mediapipe":
        return _mediapipe_runner(case, mode)
    raise ValueError(f"unknown backend {key!r}")


# ----------------------------------------------------------------------------- results
@dataclass
class BenchRow:
    """One backend's timing of one case in one output mode (a ``cases`` entry of the JSON)."""

    preset: str
    tensor_shape: tuple[int, int, int]
    output_size: tuple[int, int]
    activation: str
    content: str
    boundary_fraction: float
    outputs: str
    backend: str
    label: str
    median_ms: float | None = None
    iqr_ms: float | None = None
    samples: int = 0
    samples_ms: list[float] = field(default_factory=list)
    bytes_moved: int = 0
    floor_ms: float | None = None
    ratio_to_mediapipe: float | None = None
    fraction_of_copy_bandwidth: float | None = None
    vs_reference: dict[str, Any] | None = None
    note: str = ""
    unavailable: str | None = None

    def same_cell(self, other: BenchRow) -> bool:
        return (self.preset, self.content, self.outputs, self.tensor_shape, self.output_size) == (
            other.preset,
            other.content,
            other.outputs,
            other.tensor_shape,
            other.output_size,
        )


def finish_rows(rows: Iterable[BenchRow], gbps: float) -> None:
    """Fill the derived figures: ratio to MediaPipe, floor time and fraction of copy bandwidth."""
    rows = list(rows)
    for row in rows:
        if row.median_ms is None or row.unavailable:
            continue
        if gbps > 0 and row.bytes_moved:
            row.floor_ms = row.bytes_moved / (gbps * 1e9) * 1e3
            row.fraction_of_copy_bandwidth = row.floor_ms / row.median_ms
        mediapipe = next(
            (
                r
                for r in rows
                if r.backend == "mediapipe" and r.same_cell(row) and r.median_ms and not r.unavailable
            ),
            None,
        )
        if mediapipe is not None and mediapipe.median_ms:
            row.ratio_to_mediapipe = row.median_ms / mediapipe.median_ms


def compare_to_reference(
    runner_outputs: tuple[Sequence[np.ndarray] | np.ndarray | None, np.ndarray | None],
    reference_outputs: tuple[np.ndarray | None, np.ndarray | None],
    case: BenchCase,
    channels: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Agreement of a backend's last masks with gpu_seg's CPU reference (MediaPipe semantics).

    ``channels``: the reference channels the backend's confidence planes hold (default: all).
    uint8 masks are compared after dividing by 255. ``parity_ok`` says whether float32 masks meet
    the core tolerances (and the category mask differs only at near ties).
    """
    conf, cat = runner_outputs
    ref_conf, ref_cat = reference_outputs
    report: dict[str, Any] = {}
    if conf is not None and ref_conf is not None:
        expected = len(ref_conf) if channels is None else len(channels)
        if len(conf) == expected and all(np.shape(p) == ref_conf.shape[1:] for p in conf):
            dtype = np.asarray(conf[0]).dtype if len(conf) else np.dtype(np.float32)
            scale = 255.0 if dtype == np.uint8 else 1.0
            worst, bad = confidence_error(conf, ref_conf, case.activation, channels, scale)
            report["confidence_max_abs_error"] = worst
            if dtype == np.float32:
                report["parity_ok"] = bad == 0
        else:
            report["error"] = f"{len(conf)} confidence planes, expected {expected} of {ref_conf.shape[1:]}"
            report["parity_ok"] = False
    if cat is not None and ref_cat is not None and cat.shape == ref_cat.shape:
        differs = cat != ref_cat
        report["category_mismatch_fraction"] = float(differs.mean())
        if case.channels > 1:
            report["category_far_mismatches"] = far_from_ties(
                differs, case.tensor, case.activation, case.output_size
            )
        else:
            report["category_far_mismatches"] = int(differs.sum())
        report["parity_ok"] = report.get("parity_ok", True) and report["category_far_mismatches"] == 0
    return report


# ----------------------------------------------------------------------------- goals
def _row(rows: Sequence[BenchRow], preset: str, outputs: str, backend: str, content: str = "model-like"):
    for row in rows:
        if (
            row.preset == preset
            and row.outputs == outputs
            and row.backend == backend
            and row.content == content
            and row.median_ms is not None
            and not row.unavailable
        ):
            return row
    return None


def evaluate_goals(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    """The performance goals, each with its measured value and pass (True), miss (False) or n/a (None)."""
    goals: list[dict[str, Any]] = []

    def mediapipe_goal(preset: str, outputs: str, target: float) -> None:
        gl = _row(rows, preset, outputs, "gl")
        ratio = gl.ratio_to_mediapipe if gl is not None else None
        goals.append(
            {
                "name": f"{preset} {outputs}: GL / MediaPipe CPU <= {target:.2f}",
                "target": target,
                "measured": ratio,
                "passed": None if ratio is None else ratio <= target,
                "detail": "n/a (not run)"
                if ratio is None
                else f"GL {gl.median_ms:.2f} ms vs MediaPipe {gl.median_ms / ratio:.2f} ms: {ratio:.2f}x"
                + ("" if ratio <= target else f", needs {ratio / target:.2f}x faster"),
            }
        )

    mediapipe_goal("multiclass", "both", 0.20)
    mediapipe_goal("selfie", "both", 0.20)
    mediapipe_goal("deeplab", "category", 0.33)

    presets = sorted({r.preset for r in rows}, key=lambda p: list(PRESETS).index(p) if p in PRESETS else 99)
    for preset in presets:
        gl, cv = _row(rows, preset, "category", "gl"), _row(rows, preset, "category", "opencv")
        ratio = gl.median_ms / cv.median_ms if gl is not None and cv is not None else None
        noise = ""
        gl_n, cv_n = (_row(rows, preset, "category", k, "iid-noise") for k in ("gl", "opencv"))
        if gl_n is not None and cv_n is not None:
            noise = f"; iid noise: {gl_n.median_ms:.2f} vs {cv_n.median_ms:.2f} ms"
        goals.append(
            {
                "name": f"{preset} category: GL faster than OpenCV",
                "target": 1.0,
                "measured": ratio,
                "passed": None if ratio is None else ratio < 1.0,
                "detail": "n/a (not run)"
                if ratio is None
                else f"GL {gl.median_ms:.2f} ms vs OpenCV {cv.median_ms:.2f} ms: {ratio:.2f}x{noise}",
            }
        )
    for preset in presets:
        gl = _row(rows, preset, "confidence", "gl")
        ratio = gl.median_ms / gl.floor_ms if gl is not None and gl.floor_ms else None
        goals.append(
            {
                "name": f"{preset} confidence: GL within 2.5x of the copy-bandwidth floor",
                "target": 2.5,
                "measured": ratio,
                "passed": None if ratio is None else ratio <= 2.5,
                "detail": "n/a (not run)"
                if ratio is None
                else f"GL {gl.median_ms:.2f} ms vs floor {gl.floor_ms:.2f} ms "
                f"({gl.bytes_moved / 1e6:.1f} MB): {ratio:.1f}x",
            }
        )
    return goals


# ----------------------------------------------------------------------------- environment
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_version(module: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module), "__version__", None))
    except ImportError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: other work on the machine shows up here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def environment(gl_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the figures were measured: CPU, memory, GL renderer, library versions, git commit."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    threads: dict[str, Any] = {}
    try:
        threads["opencv"] = importlib.import_module("cv2").getNumThreads()
    except ImportError:
        pass
    try:
        threads["torch"] = importlib.import_module("torch").get_num_threads()
    except ImportError:
        pass
    gl = dict(gl_info or {})
    gl.pop("extensions", None)
    from . import __version__

    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _memory_gib(),
        "load_average": load_average(),
        "gl": gl,
        "env": {
            k: os.environ[k]
            for k in ("LP_NUM_THREADS", "GPU_SEG_EGL_DEVICE", "OMP_NUM_THREADS")
            if k in os.environ
        },
        "threads": threads,
        "versions": {
            "gpu_seg": __version__,
            "numpy": _version("numpy"),
            "opencv": _module_version("cv2"),
            "mediapipe": _version("mediapipe"),
            "moderngl": _version("moderngl"),
            "torch": _version("torch"),
            "matplotlib": _version("matplotlib"),
        },
        "git": _git(),
    }
