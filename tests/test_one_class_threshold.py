"""One-class sigmoid category masks near the threshold, against real MediaPipe (CPU delegate).

MediaPipe's CPU calculator marks a pixel foreground (0) where ``1.0f / (1.0f + std::exp(-v)) > 0.5f``
for the interpolated logit ``v``. With a correctly rounded ``expf`` (glibc's) that holds exactly when
``v > 3 * 2**-25`` (see ``gpu_seg.reference.SIGMOID_ONE_CLASS_THRESHOLD``); an ``exp`` one ulp off near
1 (numpy's float32 SIMD ``exp``, a GPU's ``exp``) moves the threshold within about ``(6e-8, 1.3e-7)``.
The project's bar is that one-class thresholding matches MediaPipe exactly, so every implementation
is checked here against the oracle on logits in and around that band, constant and interpolated.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpu_seg
from gpu_seg.tools.oracle import mediapipe_postprocess

THRESHOLD = np.float32(3 * 2.0**-25)
_UP, _DOWN = np.float32(np.inf), np.float32(-np.inf)
VALUES = [
    np.nextafter(THRESHOLD, _DOWN),
    THRESHOLD,
    np.nextafter(THRESHOLD, _UP),
    np.nextafter(np.nextafter(THRESHOLD, _UP), _UP),
    5.9604645e-8,  # 2**-24
    6.2e-8,
    7e-8,
    1e-7,
    1.1920929e-7,  # 2**-23
    1.2e-7,
    1.2318e-7,
    1.2319e-7,
    1.5e-7,
    2e-7,
    1e-30,
    0.0,
    -0.0,
    -1e-7,
    -1e-30,
    1.0,
    -1.0,
    np.inf,
    -np.inf,
    np.nan,
]
IMPLEMENTATIONS = ["reference", "cpu", "gl-fragment", "gl-fragment-shortcut", "gl-compute"]


def _category(implementation: str, new_processor, tensor: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if implementation == "reference":
        result = gpu_seg.reference_postprocess(tensor, "sigmoid", size, output_confidence_masks=False)
        return result.category_mask
    if implementation == "cpu":
        pp = new_processor("sigmoid", backend="cpu", output_confidence_masks=False)
        return pp.process(tensor, size).category_mask
    passes = "compute" if implementation == "gl-compute" else "fragment"
    pp = new_processor("sigmoid", backend="gl", gl_passes=passes, output_confidence_masks=False)
    pp.process(np.zeros((2, 2, 1), np.float32))
    if pp.stats["gl_passes"] != passes:
        pytest.skip(f"no GL {passes} passes here (GL 4.3 compute shaders needed)")
    pipeline = pp._supervisor.generation.pipeline
    pipeline.category_shortcut = implementation == "gl-fragment-shortcut"
    pipeline.SHORTCUT_MAX_UNSURE, pipeline.SHORTCUT_MIN_WORK = 1.0, 0  # take it wherever it applies
    result = pp.process(tensor, size)
    assert result.backend == "gl"
    return result.category_mask


def _check(implementation, new_processor, tensor, size):
    expected = mediapipe_postprocess(tensor, "sigmoid", size, output_confidence_masks=False).category_mask
    got = _category(implementation, new_processor, tensor, size)
    differ = np.argwhere(got != expected)
    assert not len(differ), (
        f"{len(differ)} of {got.size} pixels differ from MediaPipe, first at {differ[:3].tolist()}: "
        f"got {got[tuple(differ[0])]}, MediaPipe {expected[tuple(differ[0])]}"
    )


def test_mediapipe_thresholds_at_three_times_two_to_the_minus_25():
    """The fact the rule rests on, read from MediaPipe itself (fails on a libm whose ``expf`` is not
    correctly rounded near 0, which would make the rule machine-specific)."""
    values = [np.nextafter(THRESHOLD, _DOWN), THRESHOLD, np.nextafter(THRESHOLD, _UP), 1.2e-7]
    tensor = np.array(values, np.float32).reshape(1, -1, 1).repeat(2, axis=0)
    mask = mediapipe_postprocess(tensor, "sigmoid", (len(values), 2), output_confidence_masks=False)
    assert mask.category_mask[0].tolist() == [255, 255, 0, 0]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_constant_logits_near_the_threshold(implementation, new_processor):
    # one value per 2x2 block of a 2 x (2 * len) tensor; (3 * len, 3) output: every block's interior
    # pixels read that value alone, the others lerp between neighbours
    row = np.repeat(np.array(VALUES, np.float32), 2)
    tensor = np.stack([row, row])[..., None]
    _check(implementation, new_processor, tensor, (3 * len(VALUES), 3))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_interpolated_logits_near_the_threshold(implementation, new_processor):
    ramp = np.geomspace(1e-9, 1e-6, 64).astype(np.float32)
    tensor = np.stack([ramp, ramp[::-1]])[..., None]
    _check(implementation, new_processor, tensor, (127, 3))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_small_logits_upscaled(implementation, new_processor):
    tensor = np.random.default_rng(5).uniform(-3e-5, 3e-5, (30, 30, 1)).astype(np.float32)
    tensor[10:20, 10:20] = np.random.default_rng(6).uniform(-2.0, 2.0, (10, 10, 1))  # sure cells too
    _check(implementation, new_processor, tensor, (97, 89))
