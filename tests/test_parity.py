"""GL path and numpy reference against real MediaPipe (CPU delegate) over a seeded matrix.

MediaPipe is observed through gpu_seg.tools.oracle (a constant-output .tflite run by ImageSegmenter).
Tolerances (gpu_seg.tools.parity): confidence |diff| <= 2e-5 (relative 1e-5 for unactivated large logits);
category identical except pixels whose top two interpolated values differ by < 1e-5; one-class
thresholding exact. Figures are printed in the "parity figures" section of the test summary.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_seg import reference_postprocess
from gpu_seg.tools.oracle import mediapipe_postprocess

from .mediapipe_agreement import compare

ACTIVATIONS = ["none", "sigmoid", "softmax"]
CHANNELS = [1, 2, 3, 4, 5, 8, 21, 64]
# (tensor H, W) -> output (width, height)
GEOMETRIES = {
    "same": ((12, 10), (10, 12)),
    "upscale": ((9, 12), (37, 29)),
    "downscale": ((30, 40), (17, 13)),
    "odd-ratio": ((13, 11), (24, 31)),
    "half": ((24, 16), (8, 12)),
}


def _check(tensor, activation, size, processors, parity):
    expected = mediapipe_postprocess(tensor, activation=activation, output_size=size)
    gl_result = processors(activation).process(tensor, size)
    assert gl_result.backend == "gl"
    ref_result = reference_postprocess(tensor, activation, size)
    gl_cmp = compare(gl_result, expected, tensor, activation, size)
    ref_cmp = compare(ref_result, expected, tensor, activation, size)
    for name, cmp in (("gl vs mediapipe", gl_cmp), ("reference vs mediapipe", ref_cmp)):
        parity.record(name, cmp.confidence_error, cmp.mismatches, cmp.near_tie_mismatches, cmp.pixels)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_random_logits(activation, channels, geometry, processors, parity):
    (h, w), size = GEOMETRIES[geometry]
    seed = ACTIVATIONS.index(activation) * 1000 + channels * 10 + list(GEOMETRIES).index(geometry)
    rng = np.random.default_rng(seed)
    scale = [1.0, 8.0, 50.0][seed % 3]
    tensor = (rng.standard_normal((h, w, channels)) * scale).astype(np.float32)
    _check(tensor, activation, size, processors, parity)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((64, 64, 6), (320, 240)),
        ((96, 80, 21), (157, 203)),
        ((32, 48, 2), (640, 480)),
        ((50, 50, 1), (256, 144)),
    ],
)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_model_like_tensors(shape, size, activation, processors, parity):
    # smooth class regions: low-resolution noise upsampled, background channel biased
    rng = np.random.default_rng(sum(shape) + size[0])
    h, w, c = shape
    coarse = rng.standard_normal((h // 8 + 2, w // 8 + 2, c)).astype(np.float32) * 6
    ys = np.linspace(0, coarse.shape[0] - 1.001, h)
    xs = np.linspace(0, coarse.shape[1] - 1.001, w)
    tensor = coarse[ys.astype(int)][:, xs.astype(int)] + rng.standard_normal(shape).astype(np.float32) * 0.3
    tensor[..., 0] += 2.0
    _check(np.ascontiguousarray(tensor, np.float32), activation, size, processors, parity)


@pytest.mark.parametrize("channels", [1, 2, 5, 21])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_constant_tensors_tie_to_lowest_index(activation, channels, processors, parity):
    tensor = np.full((7, 9, channels), 0.75, np.float32)
    _check(tensor, activation, (23, 11), processors, parity)


@pytest.mark.parametrize("channels", [1, 3, 8])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_very_negative_logits(activation, channels, processors, parity):
    rng = np.random.default_rng(channels)
    tensor = (rng.uniform(-400.0, -100.0, (10, 8, channels))).astype(np.float32)
    _check(tensor, activation, (19, 21), processors, parity)


@pytest.mark.parametrize("size", [(9, 8), (23, 17), (4, 3), (9, 20)])
@pytest.mark.parametrize("channels", [1, 3, 6])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_and_inf_match_mediapipe(activation, channels, size, processors):
    rng = np.random.default_rng(channels * 31 + size[0])
    tensor = (rng.standard_normal((8, 9, channels)) * 3).astype(np.float32)
    tensor[1, 2, 0] = np.nan
    tensor[4, 4, channels - 1] = np.inf
    tensor[6, 1, 0] = -np.inf
    tensor[2, 7, channels // 2] = np.nan
    expected = mediapipe_postprocess(tensor, activation=activation, output_size=size)
    results = (processors(activation).process(tensor, size), reference_postprocess(tensor, activation, size))
    for result in results:
        got, want = result.confidence_masks, expected.confidence_masks
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=2e-5)
        np.testing.assert_array_equal(result.category_mask, expected.category_mask)
