"""gpu_seg.segmenter.preprocess: MediaPipe's CPU ImageToTensor, checked against OpenCV and MediaPipe.

* the warp matrix against ``cv2.getPerspectiveTransform`` / ``cv2.invert`` (OpenCV's own LU);
* the numpy blend against ``cv2.remap`` with the same fixed-point maps;
* the uint8 -> float32 value transform against MediaPipe itself, through a model that copies its
  input to its output, at the model's size (where MediaPipe's warp and resize are identities).
The warp maps themselves are checked end to end against MediaPipe in ``test_segmenter.py``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
pytest.importorskip("mediapipe.tasks", reason="mediapipe is not installed")

from mediapipe import Image, ImageFormat  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402

from gpu_seg import InputError  # noqa: E402
from gpu_seg.segmenter import ImageToTensor, Normalization, preprocess  # noqa: E402

from .tflite_models import picker_model  # noqa: E402

#: Image sizes whose maps are not separable (tiny perspective terms of OpenCV's LU solution).
GENERAL_PLAN_SIZES = [(322, 429), (374, 498)]


def _sizes(count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    fixed = [(1, 1), (1, 7), (5, 1), (255, 256), (256, 256), (257, 255), (640, 480), (333, 517), (4237, 5617)]
    return fixed + [(rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(count)]


@pytest.mark.parametrize("tensor_size", [(256, 256), (256, 144), (17, 33)])
def test_matrix_is_opencvs(tensor_size):
    tw, th = tensor_size
    for width, height in _sizes(300, seed=tw * th):
        corners = cv2.boxPoints(((0.5 * width, 0.5 * height), (float(width), float(height)), 0.0))
        target = np.array([[0, th], [0, 0], [tw, 0], [tw, th]], np.float32)
        expected = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
        matrix = preprocess.perspective_matrix((width, height), tensor_size)
        np.testing.assert_array_equal(matrix, expected, err_msg=f"{width}x{height}")
        np.testing.assert_array_equal(preprocess._invert_3x3(matrix), cv2.invert(expected)[1])


@pytest.mark.parametrize(
    ("image_size", "tensor_size"),
    [((640, 480), (256, 256)), ((200, 150), (256, 256)), ((1, 1), (16, 8)), ((333, 517), (256, 144))]
    + [(size, (256, 256)) for size in GENERAL_PLAN_SIZES],
)
def test_numpy_blend_equals_cv2_remap(image_size, tensor_size):
    width, height = image_size
    image = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    plan = preprocess._plan(image_size, tensor_size)
    expected = cv2.remap(image, plan.xy, plan.frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(preprocess._warp_numpy(image, plan.numpy), expected)
    general = image_size in GENERAL_PLAN_SIZES
    assert isinstance(plan.numpy, preprocess._GeneralPlan) == general


def test_opencv_remap_is_used_when_it_agrees():
    assert preprocess._opencv_remap() is cv2.remap


def test_numpy_fallback_gives_the_same_tensor(monkeypatch):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in [(640, 480), (97, 301), (322, 429)]]
    convert = ImageToTensor((256, 144), Normalization((127.5,), (127.5,)))
    with_cv2 = [convert(image) for image in images]
    monkeypatch.setattr(preprocess, "_opencv_remap", lambda: None)
    for image, expected in zip(images, with_cv2, strict=True):
        np.testing.assert_array_equal(convert(image), expected)


def _mediapipe_tensor(model: bytes, image: np.ndarray) -> np.ndarray:
    """MediaPipe's input tensor, as the confidence masks of a model that copies its input."""
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_buffer=model, delegate=BaseOptions.Delegate.CPU),
        output_confidence_masks=True,
    )
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        result = segmenter.segment(Image(image_format=ImageFormat.SRGB, data=image))
        return np.stack([mask.numpy_view()[..., 0].copy() for mask in result.confidence_masks], axis=-1)


@pytest.mark.parametrize("normalization", [((0.0,), (255.0,)), ((127.5,), (127.5,)), ((100.0,), (37.0,))])
def test_value_transform_is_mediapipes_bit_for_bit(normalization):
    # Every uint8 value once per channel, in a different order in each channel.
    values = np.arange(256, dtype=np.uint8).reshape(8, 32)
    image = np.ascontiguousarray(np.stack([values, values[::-1], values.T.reshape(8, 32)], axis=-1))
    model = picker_model((32, 8), (0, 1, 2), normalization=normalization)
    expected = _mediapipe_tensor(model, image)
    got = ImageToTensor((32, 8), Normalization(*normalization))(image)[0]
    np.testing.assert_array_equal(got, expected)


def test_rgba_is_warped_as_rgb():
    rgba = np.random.default_rng(1).integers(0, 256, (50, 70, 4), dtype=np.uint8)
    convert = ImageToTensor((32, 32), Normalization((0.0,), (1.0,)))
    np.testing.assert_array_equal(convert(rgba), convert(np.ascontiguousarray(rgba[..., :3])))


def test_per_channel_normalization_is_refused_like_mediapipe():
    with pytest.raises(InputError) as info:
        ImageToTensor((8, 8), Normalization((1.0, 2.0, 3.0), (1.0, 1.0, 1.0)))
    assert info.value.argument == "normalization"
    ImageToTensor((8, 8), Normalization((2.0, 2.0, 2.0), (3.0, 3.0, 3.0)))  # equal values are fine


def test_plan_cache_is_bounded():
    convert = ImageToTensor((8, 8), Normalization((0.0,), (1.0,)))
    for width in range(1, 3 * preprocess.PLAN_CACHE_SIZE):
        convert(np.zeros((3, width, 3), np.uint8))
    assert len(convert._plans) == preprocess.PLAN_CACHE_SIZE
