"""The numpy reference against hand computations of the semantics doc and OpenCV itself."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

import gpu_seg
from gpu_seg import reference_postprocess
from gpu_seg.reference import category_mask, resize_plane
from gpu_seg.sampling import align_corners_taps, resize_taps

LOGITS = [0.2, 1.5, -0.6, 3.4]  # T2ST:46-52


def test_softmax_test_vector():
    tensor = np.array(LOGITS, np.float32).reshape(1, 1, 4)
    result = reference_postprocess(tensor, "softmax")
    exps = [math.exp(v - 3.4) for v in LOGITS]
    expected = [e / sum(exps) for e in exps]
    np.testing.assert_allclose(result.confidence_masks.ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        result.confidence_masks.ravel(), [0.03372, 0.12374, 0.01515, 0.82737], atol=1e-5
    )
    assert result.category_mask.item() == 3


def test_sigmoid_test_vector():
    tensor = np.array(LOGITS, np.float32).reshape(1, 1, 4)
    result = reference_postprocess(tensor, "sigmoid")
    expected = [1 / (1 + math.exp(-v)) for v in LOGITS]
    np.testing.assert_allclose(result.confidence_masks.ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        result.confidence_masks.ravel(), [0.54983, 0.81757, 0.35434, 0.96770], atol=1e-5
    )
    assert result.category_mask.item() == 3


def test_none_copies_logits_at_same_size():
    tensor = np.array(LOGITS, np.float32).reshape(1, 1, 4) * 100
    result = reference_postprocess(tensor, "none")
    np.testing.assert_array_equal(result.confidence_masks.ravel(), tensor.ravel())


def test_align_corners_upsample_1x4_to_2x8_by_hand():
    # T2ST:318-361 shape: one row of 4 values, output 8 x 2. Hand computation: x = c * 3/7.
    row = np.array([-2.0, -1.0, 1.0, 3.0], np.float32)
    tensor = np.stack([row, -row], axis=-1)[None]  # (1, 4, 2): class 0 wins where row >= 0
    xs = [c * 3.0 / 7.0 for c in range(8)]
    interp = [
        row[math.floor(x)] + (row[min(math.ceil(x), 3)] - row[math.floor(x)]) * (x - math.floor(x))
        for x in xs
    ]
    expected = [0 if v >= -v else 1 for v in interp]  # a tie would go to the lowest index
    assert expected == [1, 1, 1, 1, 0, 0, 0, 0]
    mask = category_mask(tensor, "none", (8, 2))
    assert mask.shape == (2, 8)
    np.testing.assert_array_equal(mask, np.array([expected, expected], np.uint8))
    # and the mapping itself
    taps = align_corners_taps(4, 8)
    np.testing.assert_allclose(taps.i0 + taps.t, xs, atol=1e-6)


def test_align_corners_picks_the_class_by_hand():
    # two classes, class 1 grows left to right: the crossing is where the lerped logits meet
    c0 = np.array([[2.0, 2.0, 2.0]], np.float32)
    c1 = np.array([[0.0, 2.5, 5.0]], np.float32)
    tensor = np.stack([c0, c1], -1)
    mask = category_mask(tensor, "none", (9, 1))
    xs = [c * 2 / 8 for c in range(9)]
    expected = [1 if (2.5 * x) > 2.0 else 0 for x in xs]
    np.testing.assert_array_equal(mask[0], expected)


def test_one_class_threshold():
    tensor = np.array([[-1.0, 0.0, 0.4, 0.5, 0.51, 3.0]], np.float32)
    assert category_mask(tensor, "none").tolist() == [[255, 255, 255, 255, 0, 0]]
    # sigmoid: threshold on sigmoid(x) > 0.5, i.e. x > 0
    assert category_mask(tensor, "sigmoid").tolist() == [[255, 255, 0, 0, 0, 0]]
    # softmax is skipped for the category mask: the raw value is thresholded
    assert category_mask(tensor, "softmax").tolist() == [[255, 255, 255, 255, 0, 0]]


def test_softmax_one_channel_is_all_ones():
    tensor = np.linspace(-30, 30, 12, dtype=np.float32).reshape(3, 4)
    result = reference_postprocess(tensor, "softmax", (7, 5))
    np.testing.assert_array_equal(result.confidence_masks, np.ones((1, 5, 7), np.float32))


def test_ties_go_to_the_lowest_index():
    tensor = np.full((3, 3, 5), 1.25, np.float32)
    assert (category_mask(tensor, "none", (6, 4)) == 0).all()
    tensor[..., 0] = 0.0
    assert (category_mask(tensor, "softmax", (6, 4)) == 1).all()


def test_nan_semantics_follow_max_element():
    tensor = np.zeros((1, 1, 3), np.float32)
    tensor[0, 0] = [np.nan, 1.0, 2.0]
    assert category_mask(tensor, "none").item() == 0  # NaN at index 0 keeps index 0
    tensor[0, 0] = [1.0, np.nan, 2.0]
    assert category_mask(tensor, "none").item() == 2  # a later NaN is skipped
    tensor[0, 0] = [3.0, np.nan, 2.0]
    assert category_mask(tensor, "none").item() == 0
    result = reference_postprocess(tensor, "softmax")
    assert np.isnan(result.confidence_masks).all()  # softmax with a NaN: every channel NaN
    assert category_mask(np.full((1, 1), np.nan, np.float32), "sigmoid").item() == 255


def test_category_index_wraps_above_256_classes():
    tensor = np.zeros((1, 1, 300), np.float32)
    tensor[0, 0, 260] = 1.0
    assert category_mask(tensor, "none").item() == 260 % 256


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((16, 12), (37, 50)),
        ((256, 256), (640, 480)),
        ((30, 50), (123, 77)),
        ((7, 5), (2, 3)),
        ((8, 8), (4, 4)),
        ((1, 5), (3, 7)),
        ((5, 1), (9, 3)),
        ((33, 17), (60, 33)),
        ((144, 256), (1280, 720)),
        ((9, 9), (9, 1)),
    ],
)
def test_resize_matches_opencv_generic_path_bit_for_bit(shape, size):
    # MediaPipe's confidence masks equal cv2.resize with IPP disabled, bit for bit (semantics doc §5).
    rng = np.random.default_rng(sum(shape) + sum(size))
    plane = rng.standard_normal(shape).astype(np.float32) * 3
    use_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        expected = cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR)
    finally:
        cv2.ipp.setUseIPP(use_ipp)
    np.testing.assert_array_equal(resize_plane(plane, *size), expected.reshape(size[1], size[0]))


def test_resize_taps_borders():
    taps = resize_taps(4, 8, "x")  # x_src = {0(clamped), .25, .75, 1.25, 1.75, 2.25, 2.75, 3(clamped)}
    np.testing.assert_allclose(taps.i0 + taps.w1, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    assert taps.i1[-1] == -1 and taps.i1[0] == 1 and taps.w1[0] == 0
    taps = resize_taps(4, 8, "y")  # rows keep fractional weights and clamp the indices
    assert taps.i0[0] == 0 and taps.i1[0] == 0 and taps.w1[0] == pytest.approx(0.75)


def test_output_dimension_of_one_samples_index_zero():
    taps = align_corners_taps(10, 1)
    assert taps.i0.tolist() == [0] and taps.i1.tolist() == [0] and taps.t.tolist() == [0.0]
    tensor = np.zeros((4, 4, 2), np.float32)
    tensor[0, 0, 1] = 1.0
    assert category_mask(tensor, "none", (1, 1)).item() == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8, np.dtype("float16"), "uint8"])
def test_reference_accepts_numpy_dtypes_for_confidence_dtype(dtype):
    # Regression: a numpy dtype was compared with strings and fell into the uint8 branch
    # (float32 gave values 8-172 instead of ~0.68).
    tensor = np.random.default_rng(3).standard_normal((5, 7, 3)).astype(np.float32)
    by_name = gpu_seg.reference_postprocess(
        tensor, "softmax", (9, 4), confidence_dtype=np.dtype(dtype).name
    ).confidence_masks
    by_dtype = gpu_seg.reference_postprocess(
        tensor, "softmax", (9, 4), confidence_dtype=dtype
    ).confidence_masks
    assert by_dtype.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(by_dtype, by_name)
    if np.dtype(dtype) == np.float32:
        assert float(np.nanmax(by_dtype)) <= 1.0
