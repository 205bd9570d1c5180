"""The end-to-end preset (``gpu-seg bench --preset end-to-end``, opt-in): image -> model -> masks.

The selfie model (:func:`gpu_seg.models.selfie_segmenter`, square) on a 640x480 real photo
(scikit-image's astronaut, the largest 4:3 crop sampled to 640x480), both masks:

* ``e2e_auto`` / ``e2e_cpu``: gpu_seg's ``ImageSegmenter.segment()`` with post-processing
  ``backend="auto"`` / ``"cpu"``;
* ``e2e_mediapipe``: mediapipe's ``ImageSegmenter.segment()`` (CPU delegate, IMAGE mode) on the
  same model file, closed explicitly when done;
* ``e2e_video`` / ``e2e_mediapipe_video``: video mode (``segment_for_video``) on a moving stream
  made from the photos (:mod:`gpu_seg.tools.soak.video`), frames prepared beforehand: frames/s is
  1000 / the median ms.

The case's tensor is the model output for the photo (gpu_seg's preprocessing and LiteRT), so the
agreement check compares each row's masks with the reference post-processing of that output: the
gpu_seg rows must be exact, the MediaPipe row shows the end-to-end parity.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..messages import first_line
from .cases import BenchCase, boundary_fraction
from .runner import BACKENDS, BackendUnavailableError, Runner, nominal_bytes_out

__all__ = [
    "E2E_BACKENDS",
    "E2E_MEDIAPIPE_PEER",
    "E2E_PRESET",
    "E2E_SIZE",
    "end_to_end_case",
    "end_to_end_keys",
    "end_to_end_runner",
]

E2E_PRESET = "end-to-end"
E2E_SIZE = (640, 480)
#: Frames of the prepared video stream (cycled).
VIDEO_FRAMES = 24
#: ``--backends`` name -> the end-to-end rows it brings.
E2E_BACKENDS: dict[str, tuple[str, ...]] = {
    "gl": ("e2e_auto", "e2e_video"),
    "cpu": ("e2e_cpu",),
    "mediapipe": ("e2e_mediapipe", "e2e_mediapipe_video"),
}
#: Each end-to-end row's MediaPipe counterpart (for ``ratio_to_mediapipe``).
E2E_MEDIAPIPE_PEER = {
    "e2e_auto": "e2e_mediapipe",
    "e2e_cpu": "e2e_mediapipe",
    "e2e_mediapipe": "e2e_mediapipe",
    "e2e_video": "e2e_mediapipe_video",
    "e2e_mediapipe_video": "e2e_mediapipe_video",
}


def end_to_end_keys(peers: tuple[str, ...]) -> list[str]:
    """The end-to-end rows for the chosen ``--backends``, in table order."""
    return [key for peer in peers for key in E2E_BACKENDS.get(peer, ())]


def end_to_end_case() -> BenchCase:
    """The end-to-end case: the photo, its video stream, the model and its output tensor.

    When something it needs is missing (scikit-image, ai-edge-litert, the model), the case carries
    the reason in ``unavailable`` and every row of it is reported as not timed.
    """
    from ...models import selfie_segmenter
    from ..soak.segmenter import ModelOutput
    from ..soak.video import load_photos, photo_at_size, photo_video

    try:
        path = selfie_segmenter(landscape=False)
        model = path.read_bytes()
        photos = load_photos()
        image = photo_at_size(photos[0], E2E_SIZE)
        video = [frame for _, frame in zip(range(VIDEO_FRAMES), photo_video(E2E_SIZE, photos), strict=False)]
        output = ModelOutput(model)
        try:
            tensor = np.array(output(image))
        finally:
            output.close()
    except Exception as exc:  # an optional part is missing: the rows say why
        empty = np.zeros((256, 256, 1), np.float32)
        reason = first_line(exc)
        return BenchCase(
            E2E_PRESET, empty, "none", E2E_SIZE, "photo", 0.0, modes=("both",), unavailable=reason
        )
    return BenchCase(
        E2E_PRESET,
        tensor,
        "none",
        E2E_SIZE,
        "photo",
        boundary_fraction(tensor, "none"),
        modes=("both",),
        inputs={"model": model, "model_path": str(path), "image": image, "video": video},
    )


class _Stream:
    """Video frames in turn (cycled), with timestamps 33 ms apart."""

    def __init__(self, frames: list[Any]) -> None:
        self.frames, self.index = frames, 0

    def next(self) -> tuple[Any, int]:
        self.index += 1
        return self.frames[self.index % len(self.frames)], self.index * 33


def _gpu_seg_runner(case: BenchCase, key: str) -> Runner:
    from ...segmenter import ImageSegmenter

    inputs = case.inputs
    video = key == "e2e_video"
    backend = "cpu" if key == "e2e_cpu" else "auto"
    try:
        segmenter = ImageSegmenter(
            inputs["model"],
            output_confidence_masks=True,
            output_category_mask=True,
            running_mode="video" if video else "image",
            backend=backend,  # type: ignore[arg-type]
        )
    except Exception as exc:
        raise BackendUnavailableError(first_line(exc)) from exc
    last: dict[str, Any] = {}
    stream = _Stream(inputs["video"])

    def call() -> None:
        if video:
            last["result"] = segmenter.segment_for_video(*stream.next())
        else:
            last["result"] = segmenter.segment(inputs["image"])

    call()  # the check frame: where did the post-processing run?
    where = last["result"].backend

    def outputs() -> tuple[np.ndarray | None, np.ndarray | None]:
        if video:  # the last frame is not the photo: nothing to compare
            return None, None
        return last["result"].confidence_masks, last["result"].category_mask

    return Runner(
        key,
        BACKENDS[key],
        call,
        outputs,
        nominal_bytes_out(case, "both"),
        segmenter.close,
        note=f"post-processing on {where}",
    )


def _mediapipe_runner(case: BenchCase, key: str) -> Runner:
    try:
        mp = importlib.import_module("mediapipe")
        vision = importlib.import_module("mediapipe.tasks.python.vision")
        base = importlib.import_module("mediapipe.tasks.python.core.base_options")
    except ImportError as exc:
        raise BackendUnavailableError(f"MediaPipe is not installed ({first_line(exc)})") from exc
    video = key == "e2e_mediapipe_video"
    options = vision.ImageSegmenterOptions(
        base_options=base.BaseOptions(
            model_asset_buffer=case.inputs["model"], delegate=base.BaseOptions.Delegate.CPU
        ),
        running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
        output_confidence_masks=True,
        output_category_mask=True,
    )
    try:
        segmenter = vision.ImageSegmenter.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(f"MediaPipe's ImageSegmenter failed: {exc}") from exc
    srgb = mp.ImageFormat.SRGB
    image = mp.Image(srgb, case.inputs["image"])
    stream = _Stream([mp.Image(srgb, f) for f in case.inputs["video"]])
    last: dict[str, Any] = {}

    def call() -> None:
        if video:
            last["result"] = segmenter.segment_for_video(*stream.next())
        else:
            last["result"] = segmenter.segment(image)

    def outputs() -> tuple[list[np.ndarray] | None, np.ndarray | None]:
        result = last.get("result")
        if result is None or video:
            return None, None
        confidence = [np.array(np.asarray(m.numpy_view())[..., 0]) for m in result.confidence_masks]
        return confidence, np.array(np.asarray(result.category_mask.numpy_view())[..., 0])

    def close() -> None:
        last.clear()
        segmenter.close()

    return Runner(key, BACKENDS[key], call, outputs, nominal_bytes_out(case, "both"), close)


def end_to_end_runner(case: BenchCase, key: str) -> Runner:
    """Prepare end-to-end row ``key`` (a key of :data:`E2E_MEDIAPIPE_PEER`).

    Raises:
        BackendUnavailableError: the case could not be built, or the backend cannot run here.
    """
    if case.unavailable:
        raise BackendUnavailableError(case.unavailable)
    if key.startswith("e2e_mediapipe"):
        return _mediapipe_runner(case, key)
    return _gpu_seg_runner(case, key)
