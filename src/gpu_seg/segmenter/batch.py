"""Segment image and video files to mask files: the engine behind ``gpu-seg segment``.

For each input ``NAME.ext`` it writes into the output folder:

* images: ``NAME.mask.png`` (the category mask, uint8 values as the model gives them: one class,
  0 = foreground and 255 = background), with ``confidence`` ``NAME.confidence.npy`` (float32
  ``(C, H, W)``), with ``overlay`` ``NAME.overlay.png`` (the mask tinted over the image);
* videos (frames in video mode): ``NAME/000000.mask.png``, ``NAME/000000.confidence.npy``, ...
  one set per frame;
* ``manifest.jsonl`` (appended to): one JSON line per image or frame (``input``, ``frame`` (null
  for images), ``outputs`` (paths relative to the folder, ``/``-separated), ``backend``, ``ms``,
  ``context_losses`` (GL context losses met, and recovered from, while computing it)), and one
  line with ``error`` per input that could not be processed.

Images are read with OpenCV (``cv2.imread``; imageio when OpenCV cannot), videos with
``cv2.VideoCapture``. Output names are chosen before anything runs, in input order: a name
already taken by an earlier input (of this run or an earlier ``run`` of the same engine) gets the
extension appended (``a_jpg``), then a number; an input that later fails keeps its name. One
unreadable input does not stop the others. Every file is written whole: to ``FILE.partial``, then
renamed. Nothing is printed: the caller gets a callback per frame and a :class:`BatchReport`.

The work is split so that other engines (``gpu_seg.distributed``: many processes or machines)
produce the same bytes: :func:`output_names` plans the names, a :class:`WorkItem` is one image or a
range of one video's frames, :class:`FrameSegmenter` segments work items and writes their outputs
through an :class:`Output`, and :meth:`FrameRecord.to_json` / :func:`error_line` are the manifest
lines.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import GpuSegError
from ..postprocessor import BackendChoice
from .segmenter import ImageSegmenter, SegmentationResult

__all__ = [
    "BatchReport",
    "BatchSegmenter",
    "FrameRecord",
    "FrameSegmenter",
    "LocalOutput",
    "OpenCVUnavailableError",
    "Output",
    "WorkItem",
    "error_line",
    "estimate_frames",
    "find_inputs",
    "is_video",
    "output_names",
    "video_frame_count",
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
    """One manifest line: an image or a video frame that was segmented.

    Attributes:
        input: the input path as given; frame: the video frame index (``None`` for an image).
        outputs: the files written, relative to the output folder, ``/``-separated.
        backend: where the post-processing ran (``"gl"`` or ``"cpu"``); ms: wall-clock time of
            segmenting and writing it; context_losses: GL context losses met while computing it.
    """

    input: str
    frame: int | None
    outputs: tuple[str, ...]
    backend: str
    ms: float
    context_losses: int = 0

    def to_json(self) -> str:
        """The manifest line (without the newline)."""
        return json.dumps(
            {
                "input": self.input,
                "frame": self.frame,
                "outputs": list(self.outputs),
                "backend": self.backend,
                "ms": self.ms,
                "context_losses": self.context_losses,
            }
        )

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> FrameRecord:
        """The record of a parsed manifest line (the inverse of :meth:`to_json`)."""
        return cls(
            entry["input"],
            entry["frame"],
            tuple(entry["outputs"]),
            entry["backend"],
            float(entry["ms"]),
            int(entry.get("context_losses", 0)),
        )


def error_line(input_path: str, reason: str) -> str:
    """The manifest line of an input that could not be (fully) processed."""
    return json.dumps({"input": input_path, "frame": None, "outputs": [], "error": reason})


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: an input and its output name; for a video, frames ``[start, stop)``.

    ``stop=None`` reads to the end. A file with a video suffix is read as a video; any other is
    read as an image, and as a whole video (the range ignored) when it is no image. ``input`` is
    the path as the user gave it (what the manifest says); ``source``, when set, is where to read
    it (an absolute path, for a process with another working directory).
    """

    input: str
    name: str
    start: int = 0
    stop: int | None = None
    source: str | None = None

    @property
    def path(self) -> str:
        """The file to read."""
        return self.source if self.source is not None else self.input


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

    def add(self, record: FrameRecord) -> None:
        """Count one segmented frame."""
        self.frames += 1
        self.backends[record.backend] += 1
        self.context_losses += record.context_losses


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
    cv2 = _cv2()
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
    names = []
    for raw in paths:
        path = Path(raw)
        candidates = [path.stem, f"{path.stem}_{path.suffix.lstrip('.')}"]
        candidates += [f"{path.stem}_{i}" for i in range(2, 10_000)]
        name = next(c for c in candidates if c and c not in taken)
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


class FrameSegmenter:
    """Segments :class:`WorkItem` s and writes their outputs: the work of one process.

    Images run on an image-mode :class:`ImageSegmenter`, videos on a video-mode one (created on the
    first video) with increasing timestamps; both are kept across items. Every output of a frame
    depends only on that frame's pixels, so any split of the items over processes writes the
    same bytes.

    Args:
        model: the ``.tflite`` bytes.
        output: where files go (:class:`LocalOutput` or any :class:`Output`).
        confidence: also write the confidence masks (``.npy``); overlay: also write ``.overlay.png``.
        backend, num_threads: as for :class:`ImageSegmenter`.
    """

    def __init__(
        self,
        model: bytes,
        output: Output,
        *,
        confidence: bool = False,
        overlay: bool = False,
        backend: BackendChoice = "auto",
        num_threads: int | None = None,
    ) -> None:
        self._cv2 = _cv2()
        self.output = output
        self.confidence = confidence
        self.overlay = overlay
        self._options = {
            "output_confidence_masks": confidence,
            "output_category_mask": True,
            "backend": backend,
            "num_threads": num_threads,
        }
        self._model = model
        self._images = ImageSegmenter(model, running_mode="image", **self._options)  # type: ignore[arg-type]
        self._videos: ImageSegmenter | None = None  # created on the first video
        self._next_timestamp = 0

    def run(self, item: WorkItem) -> Iterator[FrameRecord]:
        """Segment one item, yielding a record per frame written.

        Raises:
            GpuSegError, OSError, ValueError: the input cannot be read or segmented (frames already
                yielded stay written).
        """
        path = Path(item.path)
        if not path.is_file():
            raise OSError(f"no such file: {item.input}")
        if not is_video(path):
            image = self._read_image(path)
            if image is not None:
                yield self._segment_image(item, image)
                return
            item = WorkItem(item.input, item.name, source=item.source)  # no image: try a whole video
        yield from self._segment_video(item)

    @property
    def segmenters(self) -> tuple[ImageSegmenter, ...]:
        """The segmenters opened so far: image mode, then video mode once a video was read."""
        return tuple(s for s in (self._images, self._videos) if s is not None)

    @property
    def context_losses(self) -> int:
        """GL context losses the post-processors met so far (each was recovered from)."""
        return sum(_losses(s) for s in self.segmenters)

    def close(self) -> None:
        self._images.close()
        if self._videos is not None:
            self._videos.close()

    def __enter__(self) -> FrameSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- inputs
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

    def _segment_image(self, item: WorkItem, image: np.ndarray) -> FrameRecord:
        return self._frame(self._images, self._images.segment, item.input, None, item.name, image)

    def _frame(
        self,
        segmenter: ImageSegmenter,
        segment: Callable[[np.ndarray], SegmentationResult],
        input_path: str,
        index: int | None,
        stem: str,
        image: np.ndarray,
    ) -> FrameRecord:
        """Segment one image or frame with ``segment`` and write its outputs under ``stem``."""
        start = time.perf_counter()
        losses = _losses(segmenter)
        result = segment(image)
        outputs = self._write(stem, image, result)
        elapsed = (time.perf_counter() - start) * 1e3
        return FrameRecord(input_path, index, outputs, result.backend, elapsed, _losses(segmenter) - losses)

    def _segment_video(self, item: WorkItem) -> Iterator[FrameRecord]:
        cv2 = self._cv2
        capture = cv2.VideoCapture(item.path)
        try:
            if not capture.isOpened():
                raise OSError(f"neither an image nor a video OpenCV can read: {item.input}")
            fps = capture.get(cv2.CAP_PROP_FPS)
            step_ms = 1000.0 / fps if fps and np.isfinite(fps) and fps > 0 else 1000.0 / DEFAULT_FPS
            if self._videos is None:
                self._videos = ImageSegmenter(self._model, running_mode="video", **self._options)  # type: ignore[arg-type]
            videos = self._videos
            capture = _seek(cv2, capture, item.path, item.start)
            first = self._next_timestamp
            index = item.start
            while item.stop is None or index < item.stop:
                ok, bgr = capture.read()
                if not ok:
                    break
                timestamp = max(first + round((index - item.start) * step_ms), self._next_timestamp)
                self._next_timestamp = timestamp + 1
                segment = functools.partial(videos.segment_for_video, timestamp_ms=timestamp)
                frame = np.ascontiguousarray(bgr[..., ::-1])
                yield self._frame(videos, segment, item.input, index, f"{item.name}/{index:06d}", frame)
                index += 1
            if index == 0:
                raise OSError(f"no frame could be read from {item.input}")
        finally:
            capture.release()

    # ----------------------------------------------------------------------------- outputs
    def _write(self, stem: str, image: np.ndarray, result: SegmentationResult) -> tuple[str, ...]:
        cv2 = self._cv2
        files = {f"{stem}.mask.png": _png(cv2, result.category_mask)}
        if self.confidence:
            files[f"{stem}.confidence.npy"] = _npy(result.confidence_masks)
        if self.overlay:
            tinted = overlay(image, result.category_mask, self._images.num_classes == 1)
            files[f"{stem}.overlay.png"] = _png(cv2, tinted[..., ::-1])
        for relative, data in files.items():
            self.output.write(relative, data)
        return tuple(files)


class BatchSegmenter:
    """Runs one model over many files in this process; see the module docstring for what it writes.

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
        self.out_dir = Path(out_dir)
        self.on_frame = on_frame
        self._engine = FrameSegmenter(
            model,
            LocalOutput(self.out_dir),
            confidence=confidence,
            overlay=overlay,
            backend=backend,
            num_threads=num_threads,
        )
        self._names: set[str] = set()

    def run(self, inputs: Sequence[str | os.PathLike[str]]) -> BatchReport:
        """Segment every input; returns the report (failures included, never raised per input)."""
        report = BatchReport(inputs=len(inputs))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        names = output_names(inputs, self._names)
        start = time.perf_counter()
        with open(self.out_dir / "manifest.jsonl", "a", encoding="utf-8") as manifest:
            for raw, name in zip(inputs, names, strict=True):
                path = str(Path(raw))
                try:
                    for record in self._engine.run(WorkItem(path, name)):
                        manifest.write(record.to_json() + "\n")
                        report.add(record)
                        if self.on_frame is not None:
                            self.on_frame(record)
                    report.processed += 1
                except (GpuSegError, OSError, ValueError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    log.warning("gpu_seg: %s: %s", path, reason)
                    report.failures.append((path, reason))
                    manifest.write(error_line(path, reason) + "\n")
                manifest.flush()
        report.seconds = time.perf_counter() - start
        return report

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> BatchSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _losses(segmenter: ImageSegmenter) -> int:
    return int(segmenter.postprocessor.stats["context_losses"])


def _seek(cv2, capture, path: str, start: int):
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


def _png(cv2, pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise OSError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def _npy(array: np.ndarray) -> bytes:
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
