"""The peers: the code a user would otherwise write, and MediaPipe itself.

* OpenCV + numpy: numpy activation, ``cv2.resize`` per plane (confidence); ``cv2.resize`` of the
  logits + ``np.argmax`` (category, half-pixel rather than MediaPipe's align-corners mapping).
* PyTorch CPU, and PyTorch CUDA (host -> host with pinned buffers, and resident) where CUDA
  exists: ``softmax``/``sigmoid`` + ``F.interpolate(bilinear)``, ``argmax`` for the category
  (:mod:`.torch_peers`).
* MediaPipe CPU: ``ImageSegmenter`` on a constant model (:mod:`gpu_seg.tools.oracle`); only
  ``segment()`` is timed.

Each ``*_runner(case, mode)`` raises :class:`~.runner.BackendUnavailableError` when its library is
not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ...inputs import parse_activation
from ...types import Activation
from .. import oracle
from ..messages import INSTALL_BENCH, INSTALL_MEDIAPIPE
from .cases import MODES, BenchCase
from .runner import BACKENDS, BackendUnavailableError, Runner, float32_outputs, nominal_bytes_out
from .torch_peers import one_class_threshold, torch_cuda_runner, torch_runner

__all__ = ["PEER_RUNNERS", "mediapipe_runner", "opencv_runner", "torch_runner"]


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


def opencv_runner(case: BenchCase, mode: str) -> Runner:
    try:
        cv2 = importlib.import_module("cv2")
    except ImportError as exc:
        raise BackendUnavailableError(f"OpenCV is not installed ({INSTALL_BENCH})") from exc
    activation = parse_activation(case.activation)
    tensor, (width, height) = case.tensor, case.output_size
    conf_out, cat_out = float32_outputs(case, mode)
    threshold = one_class_threshold(activation)
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
        "opencv", BACKENDS["opencv"], call, lambda: (conf_out, cat_out), nominal_bytes_out(case, mode)
    )


def mediapipe_runner(case: BenchCase, mode: str) -> Runner:
    if not oracle.mediapipe_available():
        raise BackendUnavailableError(f"MediaPipe is not installed ({INSTALL_MEDIAPIPE})")
    conf, cat = MODES[mode]
    width, height = case.output_size
    if cat and 1 in (width, height):
        raise BackendUnavailableError("MediaPipe's category mask crashes on an output width or height of 1")
    try:
        segmenter = oracle.open_segmenter(case.mediapipe_model(), conf, cat)
    except (RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(f"MediaPipe's ImageSegmenter failed: {exc}") from exc
    image = oracle.blank_image(width, height)
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

    return Runner("mediapipe", BACKENDS["mediapipe"], call, outputs, nominal_bytes_out(case, mode), close)


#: Peer key -> the function that prepares it.
PEER_RUNNERS: dict[str, Callable[[BenchCase, str], Runner]] = {
    "opencv": opencv_runner,
    "torch": torch_runner,
    "torch_cuda": lambda case, mode: torch_cuda_runner(case, mode, resident=False),
    "torch_cuda_resident": lambda case, mode: torch_cuda_runner(case, mode, resident=True),
    "mediapipe": mediapipe_runner,
}
