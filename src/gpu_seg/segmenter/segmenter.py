"""``ImageSegmenter``: image -> model -> MediaPipe-exact masks, with gpu_seg's post-processing."""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .. import forks
from ..errors import ClosedError, InputError
from ..events import DeferredCallback
from ..inputs import check_backend, check_requested_outputs, flag, parse_activation, positive_int
from ..postprocessor import BackendChoice, Event, SegmentationPostprocessor
from ..resilience import RecoveryPolicy
from ..types import Activation
from .inference import LiteRTModel
from .metadata import ModelInfo, Normalization, check_normalization, read_model_info
from .preprocess import MAX_IMAGE_DIM, ImageToTensor, check_image

__all__ = ["ImageSegmenter", "RunningMode", "SegmentationResult", "check_model_options"]

log = logging.getLogger("gpu_seg")

RunningMode = Literal["image", "video"]

#: LiteRT takes ``num_threads`` as a C int.
_MAX_THREADS = 2**31 - 1


@dataclass(frozen=True)
class SegmentationResult:
    """Masks for one image or frame, at the image's size.

    Attributes:
        confidence_masks: float32 ``(C, H, W)``, one mask per model channel; ``None`` when not
            requested. Values are the model's activated outputs (the selfie models: probabilities).
        category_mask: uint8 ``(H, W)``; ``None`` when not requested. One class: 0 = foreground,
            255 = background; several classes: the index of the first maximum.
        backend: where the post-processing ran, ``"gl"`` or ``"cpu"``.
        timestamp_ms: the frame's timestamp in video mode, else ``None``.
        preprocess_ms, model_ms, postprocess_ms: wall-clock time of each stage for this frame.
    """

    confidence_masks: np.ndarray | None
    category_mask: np.ndarray | None
    backend: str
    timestamp_ms: int | None
    preprocess_ms: float
    model_ms: float
    postprocess_ms: float


_STAGES = ("preprocess_ms", "model_ms", "postprocess_ms")


@dataclass
class _Timing:
    """Frames and per-stage times in ms (preprocess, model, post-process): totals and the last frame."""

    frames: int = 0
    totals: tuple[float, ...] = (0.0, 0.0, 0.0)
    last: tuple[float, ...] = (0.0, 0.0, 0.0)

    def add(self, *stages: float) -> None:
        self.frames += 1
        self.totals = tuple(total + stage for total, stage in zip(self.totals, stages, strict=True))
        self.last = stages


class ImageSegmenter:
    """Runs a segmentation ``.tflite`` on uint8 RGB images and returns MediaPipe's masks.

    The image becomes the model input exactly as MediaPipe's CPU ``ImageToTensorCalculator`` makes
    it (:mod:`gpu_seg.segmenter.preprocess`), the model runs on LiteRT (XNNPACK), and the output
    goes through :class:`~gpu_seg.SegmentationPostprocessor` at the image's size (GLSL with
    context-loss recovery and CPU fallback, or the CPU). On the same model, the masks match
    mediapipe's ``ImageSegmenter`` (CPU delegate).

    Create with :meth:`create_from_model_path` or :meth:`create_from_buffer`. Use it as a context
    manager, or call :meth:`close`.

    Args:
        model: the ``.tflite`` bytes. It should carry MediaPipe metadata (normalisation,
            activation, labels); what it lacks must be passed explicitly.
        output_confidence_masks: return float32 ``(C, H, W)`` confidence masks.
        output_category_mask: return the uint8 ``(H, W)`` category mask.
        running_mode: ``"image"`` (use :meth:`segment`) or ``"video"`` (use
            :meth:`segment_for_video`, timestamps strictly increasing).
        backend: post-processing backend, as for ``SegmentationPostprocessor``: ``"auto"``,
            ``"gl"`` or ``"cpu"``.
        num_threads: LiteRT interpreter threads (``None``: LiteRT's default).
        normalization: ``(mean, std)`` for the input, overriding the metadata (each a number, or a
            sequence of 1 or 3 equal numbers).
        activation: ``"none"``, ``"sigmoid"`` or ``"softmax"``, overriding the metadata.
        labels: one name per output channel, overriding the metadata.
        context, on_event, policy, software_renderer, cpu_threads: passed to
            ``SegmentationPostprocessor`` (attached GL context, event callback, recovery policy,
            GL or CPU on a software rasteriser, CPU threads). A frame's events reach ``on_event``
            after the segmenter is free again: the callback may call the segmenter (``close()``,
            another ``segment()``).

    Raises:
        InputError: bad option, corrupt or unsupported model (``argument == "model"``), missing
            metadata without an explicit value (``"normalization"``, ``"activation"``).
        LiteRTUnavailableError: ``ai-edge-litert`` is not installed.
    """

    def __init__(
        self,
        model: bytes,
        *,
        output_confidence_masks: bool = True,
        output_category_mask: bool = False,
        running_mode: RunningMode = "image",
        backend: BackendChoice = "auto",
        num_threads: int | None = None,
        normalization: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
        activation: Activation | str | None = None,
        labels: Sequence[str] | None = None,
        context: object = None,
        on_event: Callable[[Event], None] | None = None,
        policy: RecoveryPolicy | None = None,
        software_renderer: Literal["fastest", "gl"] = "fastest",
        cpu_threads: int | None = None,
    ) -> None:
        output_confidence_masks = flag(output_confidence_masks, "output_confidence_masks")
        output_category_mask = flag(output_category_mask, "output_category_mask")
        check_requested_outputs(output_confidence_masks, output_category_mask)
        if running_mode not in ("image", "video"):
            raise InputError(
                "running_mode", f"unknown running mode {running_mode!r}; expected 'image' or 'video'"
            )
        num_threads = _litert_threads(num_threads)
        if not isinstance(model, (bytes, bytearray, memoryview)):
            raise InputError("model", f"expected the model's bytes, got {type(model).__name__}")
        model = bytes(model)
        info = read_model_info(model)
        self.model_info: ModelInfo = info
        self.running_mode: RunningMode = running_mode
        self._normalization, self.activation, self.labels = _resolve_metadata(
            info, normalization, activation, labels
        )
        self._tensor_size = _check_input_tensor(info)
        self._model = LiteRTModel(model, num_threads, output_index=info.output_index)
        try:
            self._check_output(labels is not None)
            self._to_tensor = ImageToTensor(self._tensor_size, self._normalization)
            # Events of a frame reach on_event after this segmenter's lock is released (the
            # callback may call the segmenter), as the post-processor delivers its own.
            self._events = DeferredCallback(on_event) if callable(on_event) else None
            self._postprocessor = SegmentationPostprocessor(
                self.activation,
                output_confidence_masks,
                output_category_mask,
                backend=backend,
                context=context,  # type: ignore[arg-type]
                on_event=self._events or on_event,
                policy=policy,
                software_renderer=software_renderer,
                cpu_threads=cpu_threads,
            )
        except BaseException:
            self._model.close()
            raise
        self._lock = threading.Lock()
        forks.renew_locks(self, "_lock")
        self._closed = False
        self._last_timestamp: int | None = None
        self._timing = _Timing()

    # ----------------------------------------------------------------------------- creation
    @classmethod
    def create_from_model_path(cls, path: str | os.PathLike[str], **options: object) -> ImageSegmenter:
        """Load a ``.tflite`` file; ``options`` are the constructor's keyword arguments.

        Args:
            path: the file's path: a ``str`` or ``bytes`` path, or an ``os.PathLike`` giving one.
                File descriptors are refused (``open`` would take over, and close, a descriptor);
                the model's bytes go to :meth:`create_from_buffer`.

        Raises:
            InputError: ``"model_path"``: not a path, or the file cannot be read; otherwise as
                the constructor.
        """
        return cls(_read_model_file(path), **options)  # type: ignore[arg-type]

    @classmethod
    def create_from_buffer(cls, model: bytes, **options: object) -> ImageSegmenter:
        """Use ``.tflite`` bytes (``bytes``, ``bytearray`` or ``memoryview``); ``options`` are the
        constructor's keyword arguments."""
        return cls(model, **options)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------- segmenting
    def segment(self, image: np.ndarray) -> SegmentationResult:
        """Masks for one image (running mode ``"image"``).

        Args:
            image: uint8 ``(H, W, 3)`` RGB (``(H, W, 4)`` RGBA: alpha ignored), row 0 = top; each
                side 1 to :data:`~gpu_seg.segmenter.preprocess.MAX_IMAGE_DIM` (32766) pixels, and
                on the GL backend at most the GL texture size (``GL_MAX_TEXTURE_SIZE``).

        Returns:
            A :class:`SegmentationResult` with masks of size ``(H, W)``.

        Raises:
            InputError: ``"image"``: not such an array, or a side out of range.
        """
        if self.running_mode != "image":
            raise InputError("running_mode", "segment() needs running_mode='image'; use segment_for_video()")
        return self._run(check_image(image, "image"), None, "image")

    def segment_for_video(self, frame: np.ndarray, timestamp_ms: int) -> SegmentationResult:
        """Masks for one video frame (running mode ``"video"``); timestamps must strictly increase
        over the frames that returned (a frame that raised used none).

        ``frame`` is as :meth:`segment`'s ``image`` (errors name ``"frame"``).
        """
        if self.running_mode != "video":
            raise InputError("running_mode", "segment_for_video() needs running_mode='video'; use segment()")
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, numbers.Integral):
            raise InputError(
                "timestamp_ms", f"expected an integer number of milliseconds, got {timestamp_ms!r}"
            )
        return self._run(check_image(frame, "frame"), int(timestamp_ms), "frame")

    def _run(self, image: np.ndarray, timestamp_ms: int | None, argument: str) -> SegmentationResult:
        """Segment ``image``; a video frame's timestamp is used up only by a frame that returns
        (a refused one, before or after the model ran, leaves it to the next)."""
        with self._events.deferring() if self._events else contextlib.nullcontext(), self._lock:
            if self._closed:
                raise ClosedError("this ImageSegmenter was closed")
            if (
                timestamp_ms is not None
                and self._last_timestamp is not None
                and timestamp_ms <= self._last_timestamp
            ):
                raise InputError(
                    "timestamp_ms",
                    f"timestamps must strictly increase: {timestamp_ms} after {self._last_timestamp}",
                )
            height, width = image.shape[:2]
            t0 = time.perf_counter()
            timings = [0.0]

            def fill(view: np.ndarray) -> None:
                self._to_tensor(image, out=view)
                timings[0] = time.perf_counter()

            output = self._model.run(fill)
            t2 = time.perf_counter()
            try:
                masks = self._postprocessor.process(output, (width, height))
            except InputError as exc:
                if exc.argument != "output_size":
                    raise
                # The image's size is the masks' size: beyond the GL texture limit (backend "gl";
                # "auto" computes such frames on the CPU, up to MAX_IMAGE_DIM), or masks larger
                # than the machine's memory.
                reason = str(exc).removeprefix("output_size: ")
                if "for this backend" in reason and self._postprocessor.backend == "gl":
                    reason += f"; backend='auto' or 'cpu' takes sides up to {MAX_IMAGE_DIM}"
                raise InputError(argument, f"size {width}x{height}: {reason}") from None
            t3 = time.perf_counter()
            if timestamp_ms is not None:
                self._last_timestamp = timestamp_ms
            pre, model, post = (timings[0] - t0) * 1e3, (t2 - timings[0]) * 1e3, (t3 - t2) * 1e3
            self._timing.add(pre, model, post)
        return SegmentationResult(
            masks.confidence_masks, masks.category_mask, masks.backend, timestamp_ms, pre, model, post
        )

    # ----------------------------------------------------------------------------- state
    @property
    def num_classes(self) -> int:
        """The model's output channels C (confidence masks per image)."""
        return self._model.output_shape[3]

    @property
    def postprocessor(self) -> SegmentationPostprocessor:
        """The post-processor (for ``attach()`` after the application recreated its GL context)."""
        return self._postprocessor

    @property
    def stats(self) -> Mapping[str, object]:
        """Frames, mean and last-frame stage times in ms, and the post-processor's stats."""
        t = self._timing
        n = max(t.frames, 1)
        stats: dict[str, object] = {"frames": t.frames}
        stats.update({name: total / n for name, total in zip(_STAGES, t.totals, strict=True)})
        stats.update({f"last_{name}": last for name, last in zip(_STAGES, t.last, strict=True)})
        stats["postprocessor"] = dict(self._postprocessor.stats)
        return stats

    def close(self) -> None:
        """Release the interpreter and the post-processor's GL objects. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._model.close()
        self._postprocessor.close()

    def __enter__(self) -> ImageSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        tw, th = self._tensor_size
        return (
            f"<ImageSegmenter input={tw}x{th} channels={self._model.output_shape[3]} "
            f"activation={self.activation.value} mode={self.running_mode}{' closed' if self._closed else ''}>"
        )

    def _check_output(self, labels_given: bool) -> None:
        channels = self._model.output_shape[3]
        if self.labels and len(self.labels) != channels:
            count = f"{len(self.labels)} labels for a model with {channels} output channels"
            if labels_given:
                raise InputError("labels", count)
            raise InputError("model", f"its metadata has {count}; pass labels=[...] to name them")


def check_model_options(model: bytes, backend: object = "auto", num_threads: object = None) -> None:
    """Check, without LiteRT or a GL context, what an :class:`ImageSegmenter` made elsewhere (a Ray
    worker) would refuse: the model's bytes and metadata, ``backend``, ``num_threads``.

    Raises:
        InputError: naming ``model``, ``backend`` or ``num_threads``.
    """
    check_backend(backend)
    _litert_threads(num_threads)
    info = read_model_info(model)
    _resolve_metadata(info, None, None, None)
    _check_input_tensor(info)


def _litert_threads(num_threads: object) -> int | None:
    """``num_threads`` checked: None (LiteRT's default) or a positive C int."""
    if num_threads is None:
        return None
    threads = positive_int(num_threads, "num_threads")
    if threads > _MAX_THREADS:
        raise InputError("num_threads", f"{threads} is more than {_MAX_THREADS}")
    return threads


def _check_input_tensor(info: ModelInfo) -> tuple[int, int]:
    shape = info.input.shape
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or min(shape) < 1:
        raise InputError("model", f"the input tensor has shape {shape}; expected (1, h, w, 3) (an RGB image)")
    if max(shape[1], shape[2]) > MAX_IMAGE_DIM:
        raise InputError(
            "model", f"the input tensor {shape[2]}x{shape[1]} has a side above {MAX_IMAGE_DIM} pixels"
        )
    return shape[2], shape[1]


def _as_values(value: float | Sequence[float], what: str) -> tuple[float, ...]:
    if isinstance(value, numbers.Real):
        return (float(value),)
    try:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError("normalization", f"{what} must be a number or a sequence of numbers") from None
    return values


def _resolve_metadata(
    info: ModelInfo,
    normalization: tuple[float | Sequence[float], float | Sequence[float]] | None,
    activation: Activation | str | None,
    labels: Sequence[str] | None,
) -> tuple[Normalization, Activation, tuple[str, ...]]:
    """Explicit values win over the model's metadata; what is in neither is an error."""
    if normalization is not None:
        if not isinstance(normalization, (tuple, list)) or len(normalization) != 2:
            raise InputError("normalization", "expected (mean, std)")
        mean, std = (_as_values(v, name) for v, name in zip(normalization, ("mean", "std"), strict=True))
        resolved_norm: Normalization | None = check_normalization(mean, std, "normalization")
    else:
        resolved_norm = info.normalization
    if resolved_norm is None:
        raise InputError(
            "normalization",
            "the model has no NormalizationOptions metadata for its input; pass normalization=(mean, std)",
        )
    if activation is not None:
        resolved_activation = parse_activation(activation)
    elif info.activation is not None:
        resolved_activation = info.activation
    else:
        raise InputError(
            "activation",
            "the model has no SEGMENTER_METADATA naming its activation; "
            "pass activation='none', 'sigmoid' or 'softmax'",
        )
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
            raise InputError("labels", f"expected a sequence of strings, got {type(labels).__name__}")
        resolved_labels = tuple(labels)  # read once: an iterator is used up by reading it
        if not all(isinstance(label, str) for label in resolved_labels):
            raise InputError("labels", "expected a sequence of strings")
    else:
        resolved_labels = info.labels
    return resolved_norm, resolved_activation, resolved_labels


def _read_model_file(path: object) -> bytes:
    """The bytes of the file at ``path`` (a str or bytes path, or an os.PathLike of one), or
    InputError("model_path").

    Anything else is refused before ``open`` sees it: ``open(int)`` would take over the caller's
    file descriptor and close it.
    """
    if isinstance(path, (bytearray, memoryview)) or (isinstance(path, bytes) and b"\0" in path):
        raise InputError(
            "model_path",
            f"a {type(path).__name__} with NUL bytes is not a path; for the model's bytes use "
            "ImageSegmenter.create_from_buffer",
        )
    if not isinstance(path, (str, bytes, os.PathLike)):
        kind = type(path).__name__
        raise InputError("model_path", f"expected a str, bytes or os.PathLike path, got {kind}")
    try:
        name = os.fspath(path)
    except TypeError as exc:  # __fspath__ returned something else than str or bytes
        raise InputError("model_path", f"{path!r} is not a path: {exc}") from None
    try:
        with open(name, "rb", opener=_open_regular_file) as stream:
            return stream.read()
    except _NotARegularFileError:
        raise InputError("model_path", f"{name!r} is not a regular file") from None
    except (OSError, ValueError) as exc:  # ValueError: NUL in the name, a non-encodable name
        raise InputError("model_path", f"cannot read the model file {name!r}: {exc}") from None


class _NotARegularFileError(Exception):
    pass


def _open_regular_file(name: str | bytes, flags: int) -> int:
    """``os.open`` of a regular file only: a device (``/dev/zero``) would be read until memory runs
    out, a FIFO would block (opened without blocking, then checked)."""
    descriptor = os.open(name, flags | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise _NotARegularFileError()
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor
