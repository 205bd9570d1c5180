"""End to end against mediapipe's ImageSegmenter (CPU delegate) on the same model files.

* A model that copies its input channels (exact arithmetic) isolates the preprocessing: through
  gpu_seg's CPU path the masks must equal MediaPipe's bit for bit, at any image size.
* The real selfie models on real photos (scikit-image's bundled astronaut, camera, coffee, chelsea,
  rocket; crops and resizes to sizes other than the model's): the issue's goals, category masks
  identical on >= 99.99 % of pixels and mean |confidence difference| <= 1e-5, on both backends.
  The figures reached are printed in the "parity figures" summary.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
pytest.importorskip("mediapipe.tasks", reason="mediapipe is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

from mediapipe import Image, ImageFormat  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402

from gpu_seg.segmenter import ImageSegmenter  # noqa: E402

from .segmenter_support import selfie_model  # noqa: E402
from .tflite_models import picker_model  # noqa: E402

CATEGORY_GOAL = 0.9999
CONFIDENCE_GOAL = 1e-5


def _mediapipe(model: bytes, mode: str = "image"):
    running_mode = {"image": vision.RunningMode.IMAGE, "video": vision.RunningMode.VIDEO}[mode]
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_buffer=model, delegate=BaseOptions.Delegate.CPU),
        running_mode=running_mode,
        output_confidence_masks=True,
        output_category_mask=True,
    )
    return vision.ImageSegmenter.create_from_options(options)


def _masks(result) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.stack([m.numpy_view()[..., 0].copy() for m in result.confidence_masks])
    return confidence, result.category_mask.numpy_view()[..., 0].copy()


def _photos() -> dict[str, np.ndarray]:
    astronaut = skdata.astronaut()
    camera = np.repeat(skdata.camera()[..., None], 3, axis=-1)
    big = cv2.resize(astronaut, (400, 600), interpolation=cv2.INTER_LINEAR)
    return {
        "astronaut-512x512": astronaut,
        "astronaut-640x480": cv2.resize(astronaut, (640, 480), interpolation=cv2.INTER_AREA),
        "astronaut-333x517": np.ascontiguousarray(big[40:557, 30:363]),
        "astronaut-200x150": cv2.resize(astronaut, (200, 150), interpolation=cv2.INTER_AREA),
        "astronaut-322x429": np.ascontiguousarray(big[100:529, 50:372]),  # non-separable warp maps
        "astronaut-1023x769": cv2.resize(astronaut, (1023, 769), interpolation=cv2.INTER_CUBIC),
        "camera-300x400": np.ascontiguousarray(camera[50:450, 100:400]),
        "coffee": skdata.coffee(),
        "chelsea": skdata.chelsea(),
        "rocket": skdata.rocket(),
    }


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return _photos()


@pytest.mark.parametrize("image_size", [(100, 80), (640, 480), (322, 429), (33, 517), (50, 30), (7, 5)])
def test_preprocessing_is_mediapipes_bit_for_bit(image_size):
    model = picker_model((64, 48), (0, 1, 2))
    width, height = image_size
    image = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    with (
        _mediapipe(model) as reference,
        ImageSegmenter(model, output_category_mask=True, backend="cpu") as ours,
    ):
        expected_confidence, expected_category = _masks(reference.segment(Image(ImageFormat.SRGB, image)))
        result = ours.segment(image)
    np.testing.assert_array_equal(result.confidence_masks, expected_confidence)
    np.testing.assert_array_equal(result.category_mask, expected_category)


def _compare(result, expected, pair: str, parity) -> tuple[float, float]:
    confidence, category = expected
    diff = np.abs(result.confidence_masks - confidence)
    equal = float(np.mean(result.category_mask == category))
    parity.record(pair, float(diff.max()), int(np.sum(result.category_mask != category)), 0, category.size)
    return float(diff.mean()), equal


@pytest.mark.parametrize("backend", ["cpu", "auto"])
@pytest.mark.parametrize("landscape", [False, True])
def test_selfie_models_on_real_photos(landscape, backend, photos, parity):
    model = selfie_model(landscape).read_bytes()
    with (
        _mediapipe(model) as reference,
        ImageSegmenter(model, output_category_mask=True, backend=backend) as ours,
    ):
        assert ours.labels == tuple(reference.labels) == ("selfie",)
        foreground = {}
        for name, image in photos.items():
            expected = _masks(reference.segment(Image(ImageFormat.SRGB, image)))
            result = ours.segment(image)
            assert result.confidence_masks.shape == (1, *image.shape[:2])
            mean_diff, equal = _compare(
                result, expected, f"selfie{'-landscape' * landscape} {backend}", parity
            )
            assert equal >= CATEGORY_GOAL, f"{name}: {equal:.6%} of category pixels equal"
            assert mean_diff <= CONFIDENCE_GOAL, f"{name}: mean |confidence diff| {mean_diff:.3g}"
            foreground[name] = float(np.mean(result.category_mask == 0))
    assert foreground["astronaut-512x512"] > 0.2  # the masks mean something: a person was found


def _pan(image: np.ndarray, frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Crops of ``image`` moving right and down, a meaningful selfie stream."""
    width, height = size
    return [np.ascontiguousarray(image[3 * i : 3 * i + height, 5 * i : 5 * i + width]) for i in range(frames)]


def test_video_mode_matches_mediapipes_video_mode(parity):
    model = selfie_model(landscape=True).read_bytes()
    frames = _pan(skdata.astronaut(), 8, (427, 320))
    with (
        _mediapipe(model, "video") as reference,
        ImageSegmenter(model, output_category_mask=True, running_mode="video", backend="auto") as ours,
    ):
        for index, frame in enumerate(frames):
            timestamp = 33 * index
            expected = _masks(reference.segment_for_video(Image(ImageFormat.SRGB, frame), timestamp))
            result = ours.segment_for_video(frame, timestamp)
            mean_diff, equal = _compare(result, expected, "selfie-landscape video", parity)
            assert equal >= CATEGORY_GOAL and mean_diff <= CONFIDENCE_GOAL, f"frame {index}"
        assert ours.stats["frames"] == len(frames)
