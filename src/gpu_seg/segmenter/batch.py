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
``cv2.VideoCapture``. Output names are chosen before anything runs, in input order: a name already
taken by an earlier input (of this run, or of an earlier run whose outputs the folder holds) gets
the extension appended (``a_jpg``), then a number, so no earlier output is overwritten; an input
that later fails keeps its name. One unreadable input does not stop the others (whatever it raises);
a video that decodes well short of the frames its container indexes is such an input (its decoded
frames stay written). Every file is written whole: to ``FILE.partial``, then renamed; a frame whose
files cannot all be written takes back those that were. The manifest is flushed after every line;
one that cannot be written stops the run (:class:`~.files.ManifestError`). Nothing is printed: the
caller gets a callback per frame and a :class:`BatchReport`.

The work is split so that other engines (``gpu_seg.distributed``: many processes or machines)
produce the same bytes: :func:`output_names` plans the names, a :class:`WorkItem` is one image or a
range of one video's frames, :class:`FrameSegmenter` segments work items and writes their outputs
through an :class:`Output`, and :meth:`FrameRecord.to_json` / :func:`error_line` are the manifest
lines.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import interrupts
from ..errors import GpuSegError
from ..postprocessor import BackendChoice
from .damage import container_truncation
from .files import (
    IMAGE_SUFFIXES,
    MANIFEST,
    PARTIAL_SUFFIX,
    VIDEO_SUFFIXES,
    LocalOutput,
    ManifestError,
    OpenCVUnavailableError,
    Output,
    encode_npy,
    encode_png,
    estimate_frames,
    find_inputs,
    is_video,
    opencv,
    opencv_failure,
    opencv_path,
    output_names,
    overlay,
    read_image,
    seek,
    video_frame_count,
)
from .segmenter import ImageSegmenter, SegmentationResult

# The file helpers live in .files; the names other modules import from here stay here.
__all__ = [
    "DEFAULT_FPS",
    "IMAGE_SUFFIXES",
    "PARTIAL_SUFFIX",
    "VIDEO_SUFFIXES",
    "BatchReport",
    "BatchSegmenter",
    "FrameRecord",
    "FrameSegmenter",
    "LocalOutput",
    "ManifestError",
    "OpenCVUnavailableError",
    "Output",
    "WorkItem",
    "error_line",
    "estimate_frames",
    "failure_reason",
    "find_inputs",
    "is_video",
    "output_names",
    "overlay",
    "video_frame_count",
]

log = logging.getLogger("gpu_seg")

#: Frame rate assumed for video timestamps when the container does not give one.
DEFAULT_FPS = 30.0


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
        backend, num_threads, cpu_threads: as for :class:`ImageSegmenter`.
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
        cpu_threads: int | None = None,
    ) -> None:
        self._cv2 = opencv()
        self.output = output
        self.confidence = confidence
        self.overlay = overlay
        self._options = {
            "output_confidence_masks": confidence,
            "output_category_mask": True,
            "backend": backend,
            "num_threads": num_threads,
            "cpu_threads": cpu_threads,
        }
        self._model = model
        self._images = ImageSegmenter(model, running_mode="image", **self._options)  # type: ignore[arg-type]
        self._videos: ImageSegmenter | None = None  # created on the first video
        #: Called with each frame's record right after its files are written, with Ctrl-C and
        #: SIGTERM held back until it returns (where the manifest line goes: no file unlisted).
        self.on_written: Callable[[FrameRecord], None] | None = None
        self._next_timestamp = 0

    def run(self, item: WorkItem) -> Iterator[FrameRecord]:
        """Segment one item, yielding a record per frame written.

        Raises:
            GpuSegError, OSError, ValueError: the input cannot be read or segmented (frames already
                yielded stay written).
        """
        path = Path(item.path)
        if not path.is_file():
            problem = "not a regular file" if path.exists() else "no such file"
            raise OSError(f"{problem}: {item.input}")
        if not is_video(path):
            image = read_image(self._cv2, path, item.input)
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
        with interrupts.held():  # the files and their record: both, or neither
            outputs = self._write(stem, image, result)
            elapsed = (time.perf_counter() - start) * 1e3
            met = _losses(segmenter) - losses
            record = FrameRecord(input_path, index, outputs, result.backend, elapsed, met)
            if self.on_written is not None:
                self.on_written(record)
        return record

    def _segment_video(self, item: WorkItem) -> Iterator[FrameRecord]:
        cv2 = self._cv2
        problem = container_truncation(item.path)  # FFmpeg would decode what is there, last frame half
        if problem:
            raise OSError(f"{problem}: {item.input}")
        with opencv_path(item.path) as path:
            try:
                capture = cv2.VideoCapture(path)
            except cv2.error as exc:
                raise OSError(f"OpenCV cannot open {item.input}: {opencv_failure(exc)}") from None
            try:
                yield from self._read_video(item, path, capture)
            finally:
                capture.release()

    def _read_video(self, item: WorkItem, path: str, capture: Any) -> Iterator[FrameRecord]:
        cv2 = self._cv2
        if not capture.isOpened():
            raise OSError(f"neither an image nor a video OpenCV can read: {item.input}")
        fps = capture.get(cv2.CAP_PROP_FPS)
        step_ms = 1000.0 / fps if fps and np.isfinite(fps) and fps > 0 else 1000.0 / DEFAULT_FPS
        announced = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        announced = int(announced) if np.isfinite(announced) and announced > 0 else 0
        if self._videos is None:
            self._videos = ImageSegmenter(self._model, running_mode="video", **self._options)  # type: ignore[arg-type]
        videos = self._videos
        reopened = seek(cv2, capture, path, item.start)
        try:
            yield from self._read_frames(item, reopened, videos, step_ms, announced)
        finally:
            if reopened is not capture:  # seek() opened the video again
                reopened.release()

    def _read_frames(
        self, item: WorkItem, capture: Any, videos: ImageSegmenter, step_ms: float, announced: int
    ) -> Iterator[FrameRecord]:
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
        if _cut_short(index, item, announced):
            raise OSError(
                f"decoding stopped at frame {index} of the {announced} frames the container "
                f"announces (truncated or corrupt): {item.input}"
            )

    # ----------------------------------------------------------------------------- outputs
    def _write(self, stem: str, image: np.ndarray, result: SegmentationResult) -> tuple[str, ...]:
        """Write the frame's files; if one cannot be written, those written are removed (where the
        output can remove files) before the error goes on: a frame is all there, or not at all."""
        cv2 = self._cv2
        files = {f"{stem}.mask.png": encode_png(cv2, result.category_mask)}
        if self.confidence:
            files[f"{stem}.confidence.npy"] = encode_npy(result.confidence_masks)
        if self.overlay:
            tinted = overlay(image, result.category_mask, self._images.num_classes == 1)
            files[f"{stem}.overlay.png"] = encode_png(cv2, tinted[..., ::-1])
        written: list[str] = []
        try:
            for relative, data in files.items():
                self.output.write(relative, data)
                written.append(relative)
        except BaseException:
            self._take_back(written)
            raise
        return tuple(files)

    def _take_back(self, written: list[str]) -> None:
        """Remove a frame's files written before one of them failed (where the output can)."""
        remove = getattr(self.output, "remove", None)
        if remove is None:
            return
        for relative in written:
            try:
                remove(relative)
            except Exception as exc:  # the write's error is the one to report
                log.warning("gpu_seg: could not remove %s after a failed write: %s", relative, exc)


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
        self._output = LocalOutput(self.out_dir)
        self._engine = FrameSegmenter(
            model,
            self._output,
            confidence=confidence,
            overlay=overlay,
            backend=backend,
            num_threads=num_threads,
        )
        self._names: set[str] = set()
        #: The report of the latest :meth:`run`, kept up to date while it runs: what an interrupted
        #: run (``KeyboardInterrupt``) had done. None before the first run.
        self.last_report: BatchReport | None = None

    def run(self, inputs: Sequence[str | os.PathLike[str]]) -> BatchReport:
        """Segment every input; returns the report (failures included, never raised per input).

        The manifest is flushed after every line, so a process killed midway leaves at most the
        files of the frame it was writing unlisted.

        Raises:
            ManifestError: the manifest cannot be written (the run stops there).
            Exception: what ``on_frame`` raised (the run stops there; that frame has its line).
        """
        report = self.last_report = BatchReport(inputs=len(inputs))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._names |= self._output.names_in_use()  # earlier runs' outputs are never overwritten
        names = output_names(inputs, self._names)
        start = time.perf_counter()
        manifest = _open_manifest(self.out_dir / MANIFEST)

        def written(record: FrameRecord) -> None:  # signals held: listed and counted together
            _append(manifest, record.to_json())
            report.add(record)

        self._engine.on_written = written
        try:
            for raw, name in zip(inputs, names, strict=True):
                path = str(Path(raw))
                try:
                    for record in self._engine.run(WorkItem(path, name)):
                        self._notify(record)
                    report.processed += 1
                except (ManifestError, _CallbackError):
                    raise
                except Exception as exc:  # this input failed; the others still run
                    reason = failure_reason(path, exc)
                    report.failures.append((path, reason))
                    _append(manifest, error_line(path, reason))
        except _CallbackError as failed:  # the application's error, not an input's
            raise failed.error from None
        finally:
            self._engine.on_written = None
            with contextlib.suppress(OSError):  # a failed write raised already
                manifest.close()
            report.seconds = time.perf_counter() - start
        return report

    def _notify(self, record: FrameRecord) -> None:
        if self.on_frame is None:
            return
        try:
            self.on_frame(record)
        except Exception as exc:
            raise _CallbackError(exc) from exc

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> BatchSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Containers whose frame count comes from an index of every frame (AVI's, MP4/QuickTime's sample
#: tables): a video that decodes clearly fewer frames was cut short. Elsewhere (WMV, MPEG, FLV,
#: Matroska) the count may be estimated from the duration, and is not relied on.
_INDEXED_CONTAINERS = frozenset({".avi", ".mp4", ".m4v", ".mov"})


def _cut_short(decoded_to: int, item: WorkItem, announced: int) -> bool:
    """Whether decoding ``item`` stopped (before frame ``decoded_to``) well short of the frames its
    container announces: more than 2 frames and 1% missing (an MP4's edit list may hide a few)."""
    if not announced or Path(item.path).suffix.lower() not in _INDEXED_CONTAINERS:
        return False
    wanted = announced if item.stop is None else min(item.stop, announced)
    return wanted - decoded_to > max(2, announced // 100)


class _CallbackError(Exception):
    """``on_frame`` raised ``error``: raised by :meth:`BatchSegmenter.run` as it is."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def failure_reason(input_path: str, exc: Exception) -> str:
    """An input's failure as its manifest line says it (``Type: message``), logged; an exception
    outside gpu_seg's, OS and value errors is a bug, logged with its traceback."""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (GpuSegError, OSError, ValueError)):
        log.warning("gpu_seg: %s: %s", input_path, reason)
    else:
        log.error("gpu_seg: %s failed", input_path, exc_info=exc)
    return reason


def _open_manifest(path: Path) -> TextIO:
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot open the manifest {path}: {exc.strerror or exc}") from None


def _append(manifest: TextIO, line: str) -> None:
    """One manifest line, flushed to the file at once."""
    try:
        manifest.write(line + "\n")
        manifest.flush()
    except OSError as exc:
        raise ManifestError(f"cannot write the manifest {manifest.name}: {exc.strerror or exc}") from None


def _losses(segmenter: ImageSegmenter) -> int:
    return int(segmenter.postprocessor.stats["context_losses"])
