"""Segment image and video files to mask files: the engine behind ``gpu-seg segment``.

For each input ``NAME.ext`` it writes into the output folder:

* images: ``NAME.mask.png`` (the category mask, uint8 values as the model gives them: one class,
  0 = foreground and 255 = background), with ``confidence`` ``NAME.confidence.npy`` (float32
  ``(C, H, W)``), with ``overlay`` ``NAME.overlay.png`` (the mask tinted over the image);
* videos (frames in video mode): ``NAME/000000.mask.png``, ``NAME/000000.confidence.npy``, ...
  one set per frame;
* ``manifest.jsonl``: one JSON line per image or frame (``input``, ``frame`` (null for images),
  ``outputs`` (paths relative to the folder), ``backend``, ``ms``), and one line with ``error``
  per input that could not be processed.

Images are read with OpenCV (``cv2.imread``; imageio when OpenCV cannot), videos with
``cv2.VideoCapture``. A name already used by an earlier input gets the extension appended
(``a_jpg``), then a number. One unreadable input does not stop the others. Nothing is printed: the
caller gets a callback per frame and a :class:`BatchReport`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GpuSegError
from ..postprocessor import BackendChoice
from .segmenter import ImageSegmenter, SegmentationResult

__all__ = [
    "BatchReport",
    "BatchSegmenter",
    "FrameRecord",
    "OpenCVUnavailableError",
    "estimate_frames",
    "find_inputs",
]

log = logging.getLogger("gpu_seg")

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
#: Frame rate assumed for video timestamps when the container does not give one.
DEFAULT_FPS = 30.0
#: Overlay tint (RGB) per class for multi-class models (class 0 is left untinted).
_PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    np.uint8,
)
_FOREGROUND_TINT = np.array([0, 255, 0], np.uint8)


class OpenCVUnavailableError(GpuSegError, ImportError):
    """Reading and writing image/video files needs OpenCV (``cv2``)."""


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise OpenCVUnavailableError(
            f"gpu-seg segment reads and writes files with OpenCV: pip install opencv-python-headless ({exc})"
        ) from exc
    return cv2


@dataclass(frozen=True)
class FrameRecord:
    """One manifest line: an image or a video frame that was segmented."""

    input: str
    frame: int | None
    outputs: tuple[str, ...]
    backend: str
    ms: float


@dataclass
class BatchReport:
    """What a run did.

    Attributes:
        inputs: inputs given (after walking folders); processed: inputs done completely.
        frames: images plus video frames segmented; seconds: wall-clock time of the run.
        backends: frames per post-processing backend (``{"gl": 10, "cpu": 2}``).
        failures: ``(input, reason)`` for every input that could not be (fully) processed.
        context_losses: GL context losses the post-processors saw (and recovered from).
    """

    inputs: int = 0
    processed: int = 0
    frames: int = 0
    seconds: float = 0.0
    backends: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    context_losses: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.processed == self.inputs


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


def estimate_frames(paths: Iterable[Path]) -> int:
    """Frames a run will segment: 1 per image, the container's frame count per video (a guess)."""
    cv2 = _cv2()
    total = 0
    for path in paths:
        count = 1
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            count = max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 1))
            capture.release()
        total += count
    return total


class BatchSegmenter:
    """Runs one model over many files; see the module docstring for what it writes.

    Args:
        model: the ``.tflite`` bytes.
        out_dir: the output folder (created).
        confidence: also write the confidence masks (``.npy``).
        overlay: also write ``.overlay.png``.
        backend, num_threads: as for :class:`ImageSegmenter`.
        on_frame: called after every image or frame with its :class:`FrameRecord`.
    """

    def __init__(
        self,
        model: bytes,
        out_dir: str | os.PathLike[str],
        *,
        confidence: bool = False,
        overlay: bool = False,
        backend: BackendChoice = "auto",
        num_threads: int | None = None,
        on_frame: Callable[[FrameRecord], None] | None = None,
    ) -> None:
        self._cv2 = _cv2()
        self.out_dir = Path(out_dir)
        self.confidence = confidence
        self.overlay = overlay
        self.on_frame = on_frame
        options = {
            "output_confidence_masks": confidence,
            "output_category_mask": True,
            "backend": backend,
            "num_threads": num_threads,
        }
        self._images = ImageSegmenter(model, running_mode="image", **options)  # type: ignore[arg-type]
        self._model = model
        self._options = options
        self._videos: ImageSegmenter | None = None  # created on the first video
        self._next_timestamp = 0
        self._names: set[str] = set()

    def run(self, inputs: Sequence[str | os.PathLike[str]]) -> BatchReport:
        """Segment every input; returns the report (failures included, never raised per input)."""
        report = BatchReport(inputs=len(inputs))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(self.out_dir / "manifest.jsonl", "a", encoding="utf-8") as manifest:
            for raw in inputs:
                path = Path(raw)
                try:
                    for record in self._process(path):
                        manifest.write(json.dumps(record.__dict__ | {"outputs": list(record.outputs)}) + "\n")
                        report.frames += 1
                        report.backends[record.backend] += 1
                        if self.on_frame is not None:
                            self.on_frame(record)
                    report.processed += 1
                except (GpuSegError, OSError, ValueError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    log.warning("gpu_seg: %s: %s", path, reason)
                    report.failures.append((str(path), reason))
                    entry = {"input": str(path), "frame": None, "outputs": [], "error": reason}
                    manifest.write(json.dumps(entry) + "\n")
                manifest.flush()
        report.seconds = time.perf_counter() - start
        report.context_losses = sum(
            int(s.stats["postprocessor"]["context_losses"])
            for s in (self._images, self._videos)
            if s is not None
        )
        return report

    def close(self) -> None:
        self._images.close()
        if self._videos is not None:
            self._videos.close()

    def __enter__(self) -> BatchSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- inputs
    def _process(self, path: Path) -> Iterator[FrameRecord]:
        if not path.is_file():
            raise OSError(f"no such file: {path}")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            image = self._read_image(path)
            if image is not None:
                yield self._segment_image(path, image)
                return
        yield from self._segment_video(path)

    def _read_image(self, path: Path) -> np.ndarray | None:
        """RGB uint8 ``(H, W, 3)``, or None when neither OpenCV nor imageio reads it as an image."""
        cv2 = self._cv2
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

    def _unique_name(self, path: Path) -> str:
        candidates = [path.stem, f"{path.stem}_{path.suffix.lstrip('.')}"]
        candidates += [f"{path.stem}_{i}" for i in range(2, 10_000)]
        name = next(c for c in candidates if c and c not in self._names)
        self._names.add(name)
        return name

    def _segment_image(self, path: Path, image: np.ndarray) -> FrameRecord:
        start = time.perf_counter()
        result = self._images.segment(image)
        outputs = self._write(self.out_dir, self._unique_name(path), image, result)
        return FrameRecord(str(path), None, outputs, result.backend, (time.perf_counter() - start) * 1e3)

    def _segment_video(self, path: Path) -> Iterator[FrameRecord]:
        cv2 = self._cv2
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise OSError(f"neither an image nor a video OpenCV can read: {path}")
            fps = capture.get(cv2.CAP_PROP_FPS)
            step_ms = 1000.0 / fps if fps and np.isfinite(fps) and fps > 0 else 1000.0 / DEFAULT_FPS
            if self._videos is None:
                self._videos = ImageSegmenter(self._model, running_mode="video", **self._options)  # type: ignore[arg-type]
            folder = self.out_dir / self._unique_name(path)
            folder.mkdir(parents=True, exist_ok=True)
            first = self._next_timestamp
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                start = time.perf_counter()
                frame = np.ascontiguousarray(bgr[..., ::-1])
                timestamp = max(first + round(index * step_ms), self._next_timestamp)
                self._next_timestamp = timestamp + 1
                result = self._videos.segment_for_video(frame, timestamp)
                outputs = self._write(folder, f"{index:06d}", frame, result)
                elapsed = (time.perf_counter() - start) * 1e3
                yield FrameRecord(str(path), index, outputs, result.backend, elapsed)
                index += 1
            if index == 0:
                raise OSError(f"no frame could be read from {path}")
        finally:
            capture.release()

    # ----------------------------------------------------------------------------- outputs
    def _write(
        self, folder: Path, stem: str, image: np.ndarray, result: SegmentationResult
    ) -> tuple[str, ...]:
        cv2 = self._cv2
        written = [folder / f"{stem}.mask.png"]
        _imwrite(cv2, written[-1], result.category_mask)
        if self.confidence:
            written.append(folder / f"{stem}.confidence.npy")
            np.save(written[-1], result.confidence_masks)
        if self.overlay:
            written.append(folder / f"{stem}.overlay.png")
            one_class = self._images.num_classes == 1
            _imwrite(cv2, written[-1], overlay(image, result.category_mask, one_class)[..., ::-1])
        return tuple(str(p.relative_to(self.out_dir)) for p in written)


def _imwrite(cv2, path: Path, pixels: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(pixels)):
        raise OSError(f"OpenCV could not write {path}")


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
