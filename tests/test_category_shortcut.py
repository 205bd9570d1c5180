"""The category shortcut: cells whose class is certain are filled flat, the rest interpolated.

The claim (proved in shaders/cell_class.frag.glsl): if the four corners of an input cell share the
first maximum k, and k leads every other channel by more than MARGIN * B at each corner (B =
max(1, largest |value| anywhere in the cell); an exact tie is no lead), then every output pixel of
the cell is class k. These tests check the claim on its own (float32 lerps, as MediaPipe computes
them), and check that the GL path with the shortcut equals the numpy reference on content built
to break it: near ties, exact ties, corners of very different magnitudes, huge and non-finite
values, one-class thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_seg.inputs import make_frame
from gpu_seg.reference import category_mask

from .test_cpu_category import PARTIAL_TIES, PER_TEXEL_MARGIN

MARGIN = np.float32(1.0 / 16384.0)  # as in cell_uniform.frag.glsl
#: Interpolation weights that include the extremes and float32's neighbours of 0 and 1.
EDGE_WEIGHTS = np.array([0.0, 2.0**-24, 0.5, 1.0 - 2.0**-24, 1.0 - 2.0**-23, 1.0], np.float32)


def _lerp(a, b, t):
    return a + (b - a) * t


def _cell_class(corners):
    """The rule of cell_class/cell_uniform.frag.glsl on float32 ``corners (4, C)``: k or -1."""
    k = int(np.argmax(corners[0]))
    if (np.argmax(corners, axis=1) != k).any():
        return -1
    others = np.delete(corners, k, axis=1)
    lead = (corners[:, k] - others.max(axis=1)).min()  # float32, as the shader computes it
    return k if lead > MARGIN * max(np.float32(1.0), np.abs(corners).max()) else -1


def test_lemma_holds_for_float32_lerps():
    """Random cells whose class just passes the rule, corners of mixed magnitudes: every
    align-corners sample keeps that class, at random weights and at 0, 1 and their neighbours."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3000):
        channels = int(rng.integers(2, 9))
        magnitudes = 10.0 ** rng.uniform(-2, 8, (4, 1)) if rng.random() < 0.5 else 10.0 ** rng.uniform(-2, 6)
        corners = (rng.standard_normal((4, channels)) * magnitudes).astype(np.float32)
        k = int(rng.integers(channels))
        corners[:, k] = -np.inf
        bound = max(1.0, float(np.abs(corners[np.isfinite(corners)]).max()))
        lead = MARGIN * bound * rng.uniform(1.0, 1.2, 4)  # just over the margin at every corner
        corners[:, k] = (corners.max(axis=1) + lead).astype(np.float32)
        if _cell_class(corners) != k:
            continue
        a, b, c, d = (corners[i] for i in range(4))
        weights = np.concatenate([EDGE_WEIGHTS, rng.random(10).astype(np.float32)])
        t0, t1 = weights[:, None, None], weights[None, :, None, None]
        values = _lerp(_lerp(a, b, t0), _lerp(c, d, t0), t1)  # (t1, t0, channels), float32
        assert (np.argmax(values, axis=-1) == k).all()
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


def _cells_of(gl, tensor, activation, size):
    """The per-cell classes the GL pass computed for ``tensor`` (-1: unsure)."""
    _run(gl, tensor, activation, size)
    slots = gl.pipeline._tensors.slots.items()
    shape = tensor.shape
    return next(s for t, s in slots if (t.height, t.width, t.channels) == shape).cells.host.copy()


@pytest.mark.parametrize(("channels", "activation"), [(5, "none"), (1, "sigmoid"), (1, "none")])
def test_cells_with_a_non_finite_or_huge_corner_are_unsure(gl_clean, channels, activation):
    tensor = np.full((9, 11, channels), -2.0, np.float32)
    tensor[..., 0] = 3.0  # class 0 everywhere, by a wide margin
    bad = {(1, 2): np.nan, (3, 8): np.inf, (6, 0): -np.inf, (7, 6): np.float32(3e37)}
    for (y, x), value in bad.items():
        tensor[y, x, channels - 1] = value
    cells = _cells_of(gl_clean, tensor, activation, (97, 83))
    touched = np.zeros(cells.shape, bool)
    for y, x in bad:
        touched[max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1] = True
    assert (cells[touched] == -1).all()
    assert (cells[~touched] == 0).all()


def test_shortcut_is_not_used_for_multiclass_sigmoid(gl_clean):
    tensor = _smooth(np.random.default_rng(5), (16, 16, 3)) * 10  # saturating logits
    size = (64, 64)
    got, strategy = _run(gl_clean, tensor, "sigmoid", size)
    assert strategy == "full"
    np.testing.assert_array_equal(got, category_mask(tensor, "sigmoid", size))


@pytest.mark.parametrize(
    ("values", "shape", "size"),
    [(PARTIAL_TIES, (3, 5, 2), (260, 232)), (PER_TEXEL_MARGIN, (3, 4, 2), (166, 200))],
    ids=["partial-ties", "per-texel-margin"],
)
def test_shortcut_on_cells_that_break_weaker_rules(gl_clean, values, shape, size):
    """Cells found against weaker rules (exact ties at some corners; a margin per texel)."""
    tensor = np.array(values.split(), np.float32).reshape(shape)
    want = category_mask(tensor, "none", size)
    got, strategy = _run(gl_clean, tensor, "none", size)
    assert strategy == "cells"
    np.testing.assert_array_equal(got, want)


def _partial_ties(rng, h, w):
    """Channel 1 tied exactly with channel 0 at some texels, behind by 1.5 margins (of the largest
    value anywhere) at the others."""
    v0 = (rng.standard_normal((h, w)) * 10.0 ** rng.uniform(-1, 2)).astype(np.float32)
    v1 = v0.copy()
    lead = rng.random((h, w)) < rng.uniform(0.5, 0.9)
    v1[lead] = v0[lead] - np.float32(MARGIN * 1.5) * np.maximum(1, np.abs(v0).max())
    return np.stack([v0, v1], -1)


def _mixed_magnitudes(rng, h, w):
    """Texels within 1 next to texels of 1e4..1e8, every one led by 1.5 margins of its own size."""
    runner = rng.uniform(-1, 1, (h, w))
    huge = rng.random((h, w)) < rng.uniform(0.1, 0.5)
    runner[huge] = 10.0 ** rng.uniform(4, 8, huge.sum()) * rng.choice([-1, 1], huge.sum())
    runner = runner.astype(np.float32)
    leader = runner + np.float32(MARGIN * 1.5) * np.maximum(1, np.abs(runner))
    return np.stack([leader, runner] if rng.random() < 0.5 else [runner, leader], -1)


@pytest.mark.parametrize("make", [_partial_ties, _mixed_magnitudes], ids=["partial-ties", "mixed-magnitudes"])
def test_random_cells_at_the_edge_of_the_rule(gl_clean, make):
    """Random cells built against the shortcut's rule; half the output sizes put taps at t just
    below 1 (float32 rounding of p * scale), where a huge corner's rounding meets a small one."""
    rng = np.random.default_rng(4)
    unsure = []
    for i in range(40):
        h, w = (int(n) for n in rng.integers(3, 10, 2))
        tensor = make(rng, h, w)
        if i % 2:
            size = ((w - 1) * int(rng.integers(5, 60)) + 1, (h - 1) * int(rng.integers(5, 60)) + 1)
        else:
            size = (int(rng.integers(20, 400)), int(rng.integers(20, 400)))
        got, strategy = _run(gl_clean, tensor, "none", size)
        assert strategy == "cells"
        np.testing.assert_array_equal(got, category_mask(tensor, "none", size), err_msg=f"case {i}")
        unsure.append(gl_clean.pipeline.last_category_strategy[1])
    assert np.mean(unsure) < 0.9  # many cells were filled flat
