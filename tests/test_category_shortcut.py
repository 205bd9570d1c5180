"""The category shortcut: cells whose class is certain are filled flat, the rest interpolated.

The claim (proved in shaders/cell_class.frag.glsl): if the four corners of an input cell share the
first maximum k, ahead of every lower index and not behind any higher one, then every convex
combination has first maximum k, so the whole cell is class k. These tests check the claim on its
own (float32 lerps, as MediaPipe computes them), and check that the GL path with the shortcut
equals the numpy reference on content built to break it: near ties, exact ties, huge and
non-finite values, one-class thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_seg.inputs import make_frame
from gpu_seg.reference import category_mask

MARGIN = 1.0 / 16384.0  # as in cell_class.frag.glsl


def _lerp(a, b, t):
    return a + (b - a) * t


def test_lemma_holds_for_float32_lerps():
    """Random corners sharing a clear first maximum: every align-corners sample keeps that class."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(4000):
        channels = int(rng.integers(2, 9))
        scale = float(10.0 ** rng.uniform(-2, 6))
        corners = (rng.standard_normal((4, channels)) * scale).astype(np.float32)
        k = int(rng.integers(channels))
        top = corners.max(axis=1) + np.float32(rng.uniform(0, 3) * scale)
        corners[:, k] = top
        if rng.random() < 0.3 and k + 1 < channels:
            corners[:, k + 1] = corners[:, k]  # exact ties with a higher index are allowed
        biggest = np.maximum(1.0, np.abs(corners).max(axis=1))
        gaps = corners[:, k : k + 1] - corners
        lower_ok = (gaps[:, :k] > MARGIN * biggest[:, None]).all()
        upper = gaps[:, k + 1 :]
        upper_ok = ((upper == 0) | (upper > MARGIN * biggest[:, None])).all()
        if not (lower_ok and upper_ok):
            continue
        a, b, c, d = (corners[i] for i in range(4))
        for t0, t1 in rng.random((16, 2)).astype(np.float32):
            value = _lerp(_lerp(a, b, t0), _lerp(c, d, t0), t1)
            assert int(np.argmax(value)) == k
        checked += 1
    assert checked > 2000


def _run(gl, tensor, activation, size, shortcut=True):
    pipeline = gl.pipeline
    saved = pipeline.category_shortcut, pipeline.SHORTCUT_MAX_UNSURE, pipeline.SHORTCUT_MIN_WORK
    pipeline.category_shortcut = shortcut
    pipeline.SHORTCUT_MAX_UNSURE, pipeline.SHORTCUT_MIN_WORK = 1.0, 0  # always take it when it applies
    try:
        out = np.empty((size[1], size[0]), np.uint8)
        pipeline.process(make_frame(tensor, activation, size, confidence=False, category=True), None, out)
        return out, pipeline.last_category_strategy[0]
    finally:
        pipeline.category_shortcut, pipeline.SHORTCUT_MAX_UNSURE, pipeline.SHORTCUT_MIN_WORK = saved


def _smooth(rng, shape, scale=6.0):
    h, w, c = shape
    coarse = rng.standard_normal((h // 6 + 2, w // 6 + 2, c)).astype(np.float32) * scale
    ys = (np.arange(h) * (coarse.shape[0] - 1) / h).astype(int)
    xs = (np.arange(w) * (coarse.shape[1] - 1) / w).astype(int)
    tensor = coarse[ys][:, xs]
    tensor[..., 0] += 2.0
    return np.ascontiguousarray(tensor)


@pytest.mark.parametrize("activation", ["none", "softmax"])
@pytest.mark.parametrize("channels", [2, 3, 6, 21])
def test_shortcut_equals_reference_on_smooth_content(gl_clean, activation, channels):
    rng = np.random.default_rng(channels)
    tensor = _smooth(rng, (24, 20, channels))
    size = (83, 97)
    got, strategy = _run(gl_clean, tensor, activation, size)
    assert strategy == "cells"
    np.testing.assert_array_equal(got, category_mask(tensor, activation, size))


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_shortcut_one_class_near_the_threshold(gl_clean, activation):
    rng = np.random.default_rng(7)
    threshold = 0.0 if activation == "sigmoid" else 0.5
    tensor = _smooth(rng, (20, 24, 1), scale=2.0)
    tensor[::3, ::2, 0] = threshold + rng.choice([-1, 1], size=tensor[::3, ::2, 0].shape) * np.float32(1e-7)
    tensor[5, 5, 0] = np.float32(threshold)
    size = (101, 67)
    got, strategy = _run(gl_clean, tensor, activation, size)
    assert strategy == "cells"
    np.testing.assert_array_equal(got, category_mask(tensor, activation, size))


def test_shortcut_near_ties_exact_ties_huge_and_non_finite(gl_clean):
    rng = np.random.default_rng(11)
    tensor = _smooth(rng, (30, 26, 5))
    tensor[3:6, 3:6, 2] = tensor[3:6, 3:6].max(axis=-1) + np.float32(1e-6)  # near ties
    tensor[8:10, 8:12, 3] = tensor[8:10, 8:12, 4] = tensor[8:10, 8:12].max(axis=-1) + 1  # exact ties
    tensor[12:14, 2:9, 1] = np.float32(3e38)  # b - a overflows
    tensor[12:14, 2:9, 0] = np.float32(-3e38)
    tensor[20, 20, 0] = np.nan
    tensor[22, 4, 3] = np.inf
    tensor[25, 15, 2] = -np.inf
    size = (131, 149)
    got, strategy = _run(gl_clean, tensor, "none", size)
    assert strategy == "cells"
    want = category_mask(tensor, "none", size)
    np.testing.assert_array_equal(got, want)
    full, _ = _run(gl_clean, tensor, "none", size, shortcut=False)
    np.testing.assert_array_equal(full, want)


def test_cells_marked_certain_really_are(gl_clean):
    """Every output pixel of a cell the GL pass marked with class k has reference class k."""
    rng = np.random.default_rng(3)
    tensor = _smooth(rng, (18, 22, 4))
    size = (95, 71)
    _run(gl_clean, tensor, "softmax", size)
    slot = next(s for layout, s in gl_clean.pipeline._tensors.slots.items() if layout.height == 18)
    cells = slot.cells.host.copy()
    want = category_mask(tensor, "softmax", size)
    from gpu_seg.sampling import align_corners_taps

    cx = align_corners_taps(22, size[0]).i0
    cy = align_corners_taps(18, size[1]).i0
    per_pixel = cells[cy[:, None], cx[None, :]]
    sure = per_pixel >= 0
    assert sure.mean() > 0.5
    np.testing.assert_array_equal(per_pixel[sure], want[sure])


def test_shortcut_is_not_used_for_multiclass_sigmoid(gl_clean):
    tensor = _smooth(np.random.default_rng(5), (16, 16, 3)) * 10  # saturating logits
    size = (64, 64)
    got, strategy = _run(gl_clean, tensor, "sigmoid", size)
    assert strategy == "full"
    np.testing.assert_array_equal(got, category_mask(tensor, "sigmoid", size))
