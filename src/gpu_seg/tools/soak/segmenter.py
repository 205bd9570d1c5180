"""``gpu-seg soak --segmenter``: the end-to-end segmenter on a video stream, with real context losses.

An :class:`~gpu_seg.segmenter.ImageSegmenter` (backend ``auto``, video mode; default model
:func:`gpu_seg.models.selfie_segmenter`) segments a stream made from real photos
(:mod:`.video`); before every K-th frame its post-processor's EGL context is destroyed
(``gpu_seg.testing.lose_context(seg.postprocessor)``). Every frame is checked against a second
segmenter on the same model with ``backend="cpu"``: both run the same interpreter on the same
input, so their model outputs are the same and the masks must agree by the parity rule of
:mod:`gpu_seg.tools.parity` (confidence within 2e-5; category identical, except near ties for
multi-class models, judged on the model output, which is recomputed only when category pixels
differ). The report gives wrong frames, losses, rebuilds, frames per second and the memory (VmRSS,
live GL objects) after warm-up, in the middle and at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...resilience import RecoveryPolicy
from ...segmenter import ImageSegmenter, ImageToTensor, SegmentationResult, read_model_info
from ...segmenter.inference import LiteRTModel
from ...types import Activation
from .. import Progress
from ..parity import Parity
from .loop import SoakLoop, default_budget, judge, recovery_policy, reported_if_interrupted
from .report import LoopReport, snapshot
from .video import photo_video

__all__ = ["DEFAULT_FRAME_SIZE", "ModelOutput", "SegmenterSoakReport", "check_frame", "segmenter_soak"]

#: Frame size ``(width, height)`` of the video stream unless given.
DEFAULT_FRAME_SIZE = (320, 240)
#: Video timestamps advance by this many milliseconds per frame (30 fps).
FRAME_INTERVAL_MS = 33


@dataclass(kw_only=True)
class SegmenterSoakReport(LoopReport):
    """What a segmenter soak measured. ``mismatched_frames`` are the wrong frames."""

    model: str
    frame_size: tuple[int, int]
    model_channels: int
    activation: str
    #: Frames per second of the segmenter under test (``segment_for_video`` calls only).
    fps: float | None = None
    #: Its mean stage times in ms over the run (``seg.stats``).
    model_ms: float | None = None
    postprocess_ms: float | None = None


def check_frame(
    result: SegmentationResult,
    expected: SegmentationResult,
    logits: Callable[[], np.ndarray],
    activation: Activation,
) -> Parity:
    """Judge ``result`` against ``expected`` (same image, same model) with the parity rule.

    ``logits()`` gives the model output ``(h, w, C)`` for the image; it is called only when a
    multi-class category mask differs, to tell near ties from real mismatches.
    """
    masks = expected.confidence_masks if expected.confidence_masks is not None else expected.category_mask
    assert masks is not None
    height, width = masks.shape[-2:]
    channels = len(expected.confidence_masks) if expected.confidence_masks is not None else 0
    tensor = np.zeros((1, 1, max(channels, 1)), np.float32)  # only its channel count matters ...
    categories_differ = not np.array_equal(result.category_mask, expected.category_mask)
    if categories_differ and channels != 1:
        tensor = logits()  # ... unless near ties must be judged
    return judge(result, expected, tensor, activation, (width, height))


class ModelOutput:
    """A model's raw output for an image, computed as :class:`ImageSegmenter` computes it
    (MediaPipe's preprocessing, LiteRT): ``ModelOutput(model)(image)`` is float32 ``(h, w, C)``.

    Raises:
        InputError: the model has no normalisation metadata, or LiteRT cannot load it.
    """

    def __init__(self, model: bytes) -> None:
        info = read_model_info(model)
        if info.normalization is None:
            raise InputError("model", "the model has no NormalizationOptions metadata for its input")
        shape = info.input.shape
        self._to_tensor = ImageToTensor((shape[2], shape[1]), info.normalization)
        self._model = LiteRTModel(model, output_index=info.output_index)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._model.run(lambda view: self._to_tensor(image, out=view))[0]

    def close(self) -> None:
        self._model.close()


class _SegmenterSoak(SoakLoop):
    report: SegmenterSoakReport

    def __init__(
        self, report: SegmenterSoakReport, model: bytes, frame_size: tuple[int, int], policy: RecoveryPolicy
    ) -> None:
        super().__init__(report)
        options = {"output_confidence_masks": True, "output_category_mask": True, "running_mode": "video"}
        self.model = model
        self.seg = ImageSegmenter(
            model, backend="auto", on_event=self.on_event, policy=policy, software_renderer="gl", **options
        )
        try:
            self.check_seg = ImageSegmenter(model, backend="cpu", **options)
        except BaseException:
            self.seg.close()
            raise
        self.pp = self.seg.postprocessor
        self.video = photo_video(frame_size)
        self.timestamp = 0
        self.model_output: ModelOutput | None = None
        self.segment_s = 0.0

    def frame(self, label: str) -> None:
        image = next(self.video)
        self.timestamp += FRAME_INTERVAL_MS
        started = time.perf_counter()
        try:
            result = self.seg.segment_for_video(image, self.timestamp)
        except Exception as exc:  # recorded: the soak reports, it does not stop
            self.raised(label, exc)
            return
        elapsed = time.perf_counter() - started
        self.segment_s += elapsed
        self.returned(result.backend, elapsed * 1e3)
        expected = self.check_seg.segment_for_video(image, self.timestamp)
        self.check(label, image, result, expected)

    def check(
        self, label: str, image: np.ndarray, result: SegmentationResult, expected: SegmentationResult
    ) -> None:
        report = self.report
        check = check_frame(result, expected, lambda: self.logits(image), self.seg.activation)
        report.worst_confidence_error = max(report.worst_confidence_error, check.confidence_error)
        report.near_tie_pixels += check.near_ties
        if check.problem is not None:
            self.mismatch(f"{label} ({result.backend})", check.problem)

    def logits(self, image: np.ndarray) -> np.ndarray:
        if self.model_output is None:
            self.model_output = ModelOutput(self.model)
        return self.model_output(image)

    def finish(self) -> None:
        super().finish()
        report, stats = self.report, self.seg.stats
        frames = self.report.frames_returned
        report.fps = frames / self.segment_s if self.segment_s > 0 else None
        report.model_ms = float(stats["model_ms"])  # type: ignore[arg-type]
        report.postprocess_ms = float(stats["postprocess_ms"])  # type: ignore[arg-type]

    def close(self) -> None:
        self.seg.close()
        self.check_seg.close()
        if self.model_output is not None:
            self.model_output.close()
        self.report.live_gl_objects_after_close = self.pp.live_gl_objects()


def _read_model(model: bytes | str | os.PathLike[str] | None, landscape: bool) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), f"<{len(model)} bytes>"
    if model is None:
        from ...models import selfie_segmenter

        model = selfie_segmenter(landscape)
    path = Path(model)
    return path.read_bytes(), str(path)


def segmenter_soak(
    frames: int = 2000,
    lose_every: int = 250,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    model: bytes | str | os.PathLike[str] | None = None,
    landscape: bool = False,
    budget: int | None = None,
    backoff: float | None = None,
    warmup: int = 10,
    progress: Progress | None = None,
) -> SegmenterSoakReport:
    """Segment ``warmup + frames`` video frames with a context loss before every ``lose_every``-th.

    Args:
        frames: frames in the soak proper, after ``warmup`` checked warm-up frames.
        lose_every: destroy the post-processor's GL context before soak frame ``i`` when
            ``i % lose_every == 0`` and ``i > 0``; 0 never does.
        frame_size: ``(width, height)`` of the video frames (and of the masks).
        model: a ``.tflite`` path or its bytes; ``None``: :func:`gpu_seg.models.selfie_segmenter`
            (fetched and cached on first use), ``landscape`` choosing its variant.
        budget, backoff: as for :func:`gpu_seg.tools.soak.soak`.
        progress: called as ``progress(1, note)`` after every soak frame.

    Returns:
        The :class:`SegmenterSoakReport`; exceptions from the segmenter are recorded, not raised.

    Raises:
        SkimageUnavailableError: scikit-image (the photos) is not installed.
        LiteRTUnavailableError: ai-edge-litert is not installed.
        InputError: the model cannot be used.
    """
    width, height = (int(v) for v in frame_size)
    if frames < 1 or warmup < 1:
        raise ValueError(f"frames and warmup must be at least 1, got {frames} and {warmup}")
    if lose_every < 0:
        raise ValueError(f"lose_every must not be negative, got {lose_every}")
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    data, name = _read_model(model, landscape)
    budget = default_budget(frames, lose_every) if budget is None else budget
    policy = recovery_policy(budget, backoff)
    before, _ = snapshot(0)
    started = time.perf_counter()
    report = SegmenterSoakReport(
        frames=frames,
        lose_every=lose_every,
        budget=budget,
        backoff=policy.backoff.base,
        warmup_frames=warmup,
        model=name,
        frame_size=(width, height),
        model_channels=0,
        activation="",
        before=before,
    )
    with reported_if_interrupted(report):
        run = _SegmenterSoak(report, data, (width, height), policy)
        report.model_channels = run.seg.num_classes
        report.activation = run.seg.activation.value
        run.execute(progress, started)
    return report
