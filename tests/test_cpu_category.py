"""The fast CPU category mask: the per-cell shortcut and the one-class sigmoid threshold are exact.

The claim (argued in gpu_seg/cpu/_category_kernels.py): when the four corners of an input cell
share the first maximum k and k leads every other channel by more than MARGIN * B at each corner
(B = max(1, largest |value| in the cell)), every output pixel of the cell is class k. The tests
check the claim on its own with float32 lerps, then the whole path against the reference on
content built to break it.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_seg import cpu
from gpu_seg.reference import SIGMOID_ONE_CLASS_THRESHOLD, category_mask
from gpu_seg.sampling import align_corners_taps


@pytest.fixture(scope="module")
def kernels():
    from gpu_seg.cpu import _category_kernels

    return _category_kernels


def fast_mask(tensor, activation, size, shortcut=True, threads=2):
    with cpu.FastCPU(threads=threads, shortcut=shortcut) as fast:
        out = np.empty((size[1], size[0]), np.uint8)
        fast.category_mask(np.ascontiguousarray(tensor, np.float32), activation, *size, out)
        return out, fast.last_category_strategy


def assert_matches_reference(tensor, activation, size):
    want = category_mask(tensor, activation, size)
    for shortcut in (True, False):
        got, strategy = fast_mask(tensor, activation, size, shortcut)
        np.testing.assert_array_equal(got, want)
    return strategy


def smooth(rng, shape, scale=6.0):
    h, w, c = shape
    coarse = rng.standard_normal((h // 6 + 2, w // 6 + 2, c)).astype(np.float32) * scale
    ys = (np.arange(h) * (coarse.shape[0] - 1) / h).astype(int)
    xs = (np.arange(w) * (coarse.shape[1] - 1) / w).astype(int)
    tensor = coarse[ys][:, xs]
    tensor[..., 0] += 2.0
    return np.ascontiguousarray(tensor, np.float32)


def sure_cells(kernels, tensor, threshold=0.5):
    """The kernel's cell classes: (H, W) int, -1 where the cell is not sure."""
    h, w, _ = tensor.shape
    klass = np.empty((h, w), np.int32)
    gap = np.empty((h, w), np.float32)
    scale = np.empty((h, w), np.float32)
    view = tensor.view()
    view.flags.writeable = False
    kernels.texel_classes(view, threshold, 0, h, klass, gap, scale)
    cells = np.empty((h, w), np.int64)
    for cy in range(h):
        kernels.cell_row(klass, gap, scale, cy, cells[cy])
    return cells


def lerp(a, b, t):
    return a + (b - a) * t


# ----------------------------------------------------------------------------- the claim itself
def test_cells_with_a_lead_just_above_the_margin_keep_their_class(kernels):
    """Corners led by k by barely more than MARGIN * B, mixed magnitudes: every float32 sample is k."""
    rng = np.random.default_rng(0)
    margin = float(kernels.MARGIN)
    checked = 0
    for _ in range(3000):
        channels = int(rng.integers(2, 7))
        k = int(rng.integers(channels))
        magnitude = 10.0 ** rng.uniform(-3, 7, size=4)  # corners of very different sizes
        corners = rng.standard_normal((4, channels)) * magnitude[:, None]
        big = max(1.0, float(np.abs(corners).max()) * 1.01)
        lead = margin * big * (1.0 + rng.uniform(1e-3, 0.05))
        corners[:, k] = np.delete(corners, k, axis=1).max(axis=1) + lead
        corners = corners.astype(np.float32)
        tensor = corners.reshape(2, 2, channels)
        cells = sure_cells(kernels, tensor)
        if cells[0, 0] != k:
            continue  # float32 rounding of the lead fell below the margin: not claimed
        a, b, c, d = corners
        for t0, t1 in rng.random((32, 2)).astype(np.float32) ** np.float32(rng.uniform(0.05, 20)):
            value = lerp(lerp(a, b, t0), lerp(c, d, t0), t1)
            assert int(np.argmax(value)) == k and np.sum(value == value[k]) == 1
        checked += 1
    assert checked > 1500


def test_cells_marked_sure_really_are(kernels):
    """Every output pixel of a cell the kernel marks with class k has reference class k."""
    rng = np.random.default_rng(3)
    tensor = smooth(rng, (18, 22, 4))
    size = (95, 71)
    want = category_mask(tensor, "none", size)
    cells = sure_cells(kernels, tensor)
    cx = align_corners_taps(22, size[0]).i0
    cy = align_corners_taps(18, size[1]).i0
    per_pixel = cells[cy[:, None], cx[None, :]]
    sure = per_pixel >= 0
    assert sure.mean() > 0.5
    np.testing.assert_array_equal(per_pixel[sure], want[sure])


def test_leads_below_the_margin_are_not_sure(kernels):
    tensor = np.zeros((2, 2, 3), np.float32)
    tensor[..., 1] = 1000.0
    tensor[..., 2] = np.float32(1000.0) + np.float32(1000.0 * float(kernels.MARGIN) * 0.5)
    assert sure_cells(kernels, tensor)[0, 0] == -1
    tensor[..., 2] = np.float32(1000.0) + np.float32(1000.0 * float(kernels.MARGIN) * 1.5)
    assert sure_cells(kernels, tensor)[0, 0] == 2
    tensor[0, 0, 0] = np.float32(1e7)  # a bigger value elsewhere in the cell raises B
    tensor[0, 0, 2] = np.float32(1.1e7)
    assert sure_cells(kernels, tensor)[0, 0] == -1


# ----------------------------------------------------------------------------- whole path vs reference
@pytest.mark.parametrize("activation", ["none", "softmax"])
@pytest.mark.parametrize("channels", [2, 3, 6, 21])
def test_smooth_content_uses_the_cells_and_matches(activation, channels):
    tensor = smooth(np.random.default_rng(channels), (24, 20, channels))
    assert assert_matches_reference(tensor, activation, (83, 97)) == "full"  # last run: shortcut off
    _, strategy = fast_mask(tensor, activation, (83, 97))
    assert strategy == "cells"


def test_near_ties_one_ulp_apart():
    """Channel 1 leads channel 0 by one ulp at every corner: interpolation can tie them."""
    rng = np.random.default_rng(4)
    base = (rng.standard_normal((16, 18)) * 50).astype(np.float32)
    tensor = np.stack([base, np.nextafter(base, np.float32(np.inf)), base - 5], axis=-1)
    assert_matches_reference(tensor, "none", (151, 133))
    assert_matches_reference(tensor, "softmax", (151, 133))


def test_ties_huge_and_non_finite():
    rng = np.random.default_rng(11)
    tensor = smooth(rng, (30, 26, 5))
    tensor[3:6, 3:6, 2] = tensor[3:6, 3:6].max(axis=-1) + np.float32(1e-6)  # near ties
    tensor[8:10, 8:12, 3] = tensor[8:10, 8:12, 4] = tensor[8:10, 8:12].max(axis=-1) + 1  # exact ties
    tensor[12:14, 2:9, 1] = np.float32(3e38)  # b - a overflows
    tensor[12:14, 2:9, 0] = np.float32(-3e38)
    tensor[15:17, 2:9, 4] = np.float32(2e30)  # above HUGE, finite
    tensor[20, 20, 0] = np.nan
    tensor[22, 4, 3] = np.inf
    tensor[25, 15, 2] = -np.inf
    tensor[27, 20] = np.nan  # every channel NaN
    assert_matches_reference(tensor, "none", (131, 149))


def test_mixed_magnitudes_in_one_cell():
    """Huge and barely-leading corners in the same cells (the cell-wide B matters here)."""
    rng = np.random.default_rng(12)
    h, w = 12, 14
    tensor = np.zeros((h, w, 3), np.float32)
    tensor[..., 0] = rng.uniform(-1, 1, (h, w))
    tensor[..., 1] = tensor[..., 0] + np.float32(2.0**-14) * np.float32(1.01)
    huge = rng.random((h, w)) < 0.3
    tensor[huge, 1] = 10.0 ** rng.uniform(5, 9, huge.sum())
    tensor[..., 2] = -3.0
    assert_matches_reference(tensor, "none", (157, 121))
    one = np.where(huge, tensor[..., 1], np.float32(0.5) + np.float32(1.01 * 2.0**-14))[..., None]
    assert_matches_reference(one, "none", (157, 121))


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_one_class_near_the_threshold(activation):
    rng = np.random.default_rng(7)
    threshold = SIGMOID_ONE_CLASS_THRESHOLD if activation == "sigmoid" else np.float32(0.5)
    tensor = smooth(rng, (20, 24, 1), scale=2.0)
    tensor[::3, ::2, 0] = threshold + rng.choice([-1, 1], size=tensor[::3, ::2, 0].shape) * np.float32(1e-7)
    tensor[5, 5, 0] = np.float32(threshold)
    assert_matches_reference(tensor, activation, (101, 67))


def test_one_class_sigmoid_tiny_values():
    """sigmoid(v) > 0.5 is not v > 0: tiny positive v give exactly 0.5 (background)."""
    tiny = np.float32(2.0) ** -np.arange(10, 40, 0.25, dtype=np.float32)
    values = np.concatenate([tiny, -tiny, [0.0, -0.0, np.nan, np.inf, -np.inf]]).astype(np.float32)
    tensor = np.resize(values, 11 * 13).reshape(11, 13, 1)
    assert_matches_reference(tensor, "sigmoid", (13, 11))
    assert_matches_reference(tensor, "sigmoid", (97, 71))
    mask, _ = fast_mask(np.full((2, 2, 1), 1e-9, np.float32), "sigmoid", (3, 3))
    assert (mask == 255).all()


def test_one_class_sigmoid_many_values_near_zero():
    """Every pixel within 2**-17 of zero, on one thread and on several: the reference's threshold."""
    rng = np.random.default_rng(8)
    tensor = rng.uniform(-(2.0**-17), 2.0**-17, (20, 20, 1)).astype(np.float32)
    tensor[::4, ::3] = rng.uniform(-2e-7, 2e-7, tensor[::4, ::3].shape)
    size = (300, 200)
    assert_matches_reference(tensor, "sigmoid", size)
    got, _ = fast_mask(tensor, "sigmoid", size, threads=1)
    np.testing.assert_array_equal(got, category_mask(tensor, "sigmoid", size))


def test_multiclass_sigmoid_saturation_ties():
    """Distinct large logits saturate to sigmoid 1.0 and tie: the lowest index wins."""
    rng = np.random.default_rng(5)
    tensor = smooth(rng, (16, 16, 3)) * 10
    got, strategy = fast_mask(tensor, "sigmoid", (64, 64))
    assert strategy == "dense"
    want = category_mask(tensor, "sigmoid", (64, 64))
    np.testing.assert_array_equal(got, want)
    assert (want != category_mask(tensor, "none", (64, 64))).any()  # the ties do change classes


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
@pytest.mark.parametrize("channels", [1, 4])
def test_iid_noise_and_downscale(activation, channels):
    rng = np.random.default_rng(channels)
    tensor = (rng.standard_normal((33, 29, channels)) * 4).astype(np.float32)
    for size in ((211, 157), (13, 9), (29, 70)):
        assert_matches_reference(tensor, activation, size)


# ----------------------------------------------------------------------------- rules that are not enough
# Two cells found by random search on which a weaker shortcut rule is wrong (the GL shortcut in
# cell_class.frag.glsl used both weaker rules and got one pixel wrong on each, on llvmpipe, until it
# took this kernel's rule; tests/test_category_shortcut.py runs both cells on GL).
# 1. Exact ties with a higher channel allowed at some corners: float32 lerp is not monotone in its
#    first argument, so a lead of a few ulp in the left column can turn into a loss.
PARTIAL_TIES = (
    "2.8002675 2.798697 6.3410606 6.3394904 4.5170727 4.5170727 17.153332 17.151762 2.2245433 2.2229729 "
    "-3.185419 -3.185419 13.064865 13.064865 -7.3100605 -7.3100605 6.760416 6.760416 -6.667347 -6.668917 "
    "2.4718611 2.4718611 -13.740309 -13.740309 6.2773414 6.2773414 -1.1046406 -1.1062111 -6.754859 -6.754859"
)
# 2. The margin taken per texel (MARGIN * max(1, |v| at that texel)) instead of over the cell:
#    b - a rounds by ulp(huge corner), far more than a small corner's lead.
PER_TEXEL_MARGIN = (
    "22318.162 49327.484 3.3907772e+07 7.494278e+07 2.5093064 2.5094612 -2.6024463 -2.6022859 "
    "1.5374137e+07 3.3979836e+07 -1.375486 -1.3754013 2.1266672e+08 4.7003488e+08 1.302175 1.3022553 "
    "-0.6265504 -0.62648875 1.2179788e+06 2.6919702e+06 -0.24559551 -0.24553387 -0.43773714 -0.4376755"
)


@pytest.mark.parametrize(
    ("values", "shape", "size", "loser"),
    [(PARTIAL_TIES, (3, 5, 2), (260, 232), 0), (PER_TEXEL_MARGIN, (3, 4, 2), (166, 200), 1)],
    ids=["partial-ties", "per-texel-margin"],
)
def test_cells_that_break_weaker_rules(kernels, values, shape, size, loser):
    tensor = np.array(values.split(), np.float32).reshape(shape)
    want = category_mask(tensor, "none", size)
    # Every texel leads with channel `loser` under the weaker rule, yet one pixel goes to the other.
    assert (tensor[..., loser] >= tensor[..., 1 - loser]).all()
    assert (want != loser).sum() == 1
    got, strategy = fast_mask(tensor, "none", size)
    assert strategy == "cells"
    np.testing.assert_array_equal(got, want)


def test_random_partial_ties():
    """Cells tied exactly at some corners and led by just over the margin at others."""
    rng = np.random.default_rng(2)
    for _ in range(12):
        h, w = rng.integers(3, 12, 2)
        v0 = (rng.standard_normal((h, w)) * 10.0 ** rng.uniform(-1, 2)).astype(np.float32)
        v1 = v0.copy()
        lead = rng.random((h, w)) < 0.5
        v1[lead] = v0[lead] - np.float32(2.0**-14 * 1.5) * np.maximum(1, np.abs(v0).max())
        tensor = np.stack([v0, v1], -1)
        assert_matches_reference(tensor, "none", (int(rng.integers(20, 400)), int(rng.integers(20, 400))))


def test_auto_shortcut_backs_off_on_noise_and_returns():
    from gpu_seg.cpu.fast import SHORTCUT_MAX_UNSURE, SHORTCUT_RETRY

    rng = np.random.default_rng(9)
    noise = (rng.standard_normal((24, 20, 3)) * 4).astype(np.float32)
    regions = smooth(rng, (24, 20, 3))
    size = (160, 150)
    with cpu.FastCPU(threads=2) as fast:
        out = np.empty((size[1], size[0]), np.uint8)
        fast.category_mask(regions, "none", *size, out)
        assert fast.last_category_strategy == "cells"
        assert fast.last_unsure_fraction < SHORTCUT_MAX_UNSURE
        fast.category_mask(noise, "none", *size, out)
        assert fast.last_category_strategy == "cells" and fast.last_unsure_fraction > SHORTCUT_MAX_UNSURE
        np.testing.assert_array_equal(out, category_mask(noise, "none", size))
        for _ in range(SHORTCUT_RETRY):  # the shortcut did not pay: plain path for a while
            fast.category_mask(regions, "none", *size, out)
            assert fast.last_category_strategy == "full"
            np.testing.assert_array_equal(out, category_mask(regions, "none", size))
        fast.category_mask(regions, "none", *size, out)
        assert fast.last_category_strategy == "cells"
        fast.category_mask(regions, "none", 30, 20, np.empty((20, 30), np.uint8))  # not worth it
        assert fast.last_category_strategy == "full"
