"""The GL path against the numpy reference on a real EGL context: shapes, sizes, layouts, NaN/inf."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_seg
from gpu_seg import reference_postprocess
from gpu_seg.inputs import make_frame
from gpu_seg.types import Activation

ACTIVATIONS = [a.value for a in Activation]


def _assert_same(got, want, activation):
    """GL equals the reference up to float rounding (a few ulp); category identical here."""
    if want.confidence_masks is not None:
        tol = 2e-6 if activation != "none" else 0.0
        np.testing.assert_allclose(got.confidence_masks, want.confidence_masks, rtol=tol, atol=tol)
    if want.category_mask is not None:
        np.testing.assert_array_equal(got.category_mask, want.category_mask)


def _run_pipeline(gl, pipeline, tensor, activation, size):
    width, height = size
    conf = np.empty((tensor.shape[2], height, width), np.float32)
    cat = np.empty((height, width), np.uint8)
    pipeline.process(make_frame(tensor, activation, size, confidence=True, category=True), conf, cat)
    return gpu_seg.Result(conf, cat, "gl")


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((1, 1, 1), (1, 1)),
        ((1, 1, 3), (5, 4)),
        ((6, 5, 2), (1, 1)),
        ((6, 5, 4), (1, 9)),
        ((6, 5, 4), (9, 1)),
        ((1, 7, 5), (11, 3)),
        ((7, 1, 5), (3, 11)),
        ((3, 4, 256), (9, 7)),
        ((2, 3, 300), (5, 4)),
        ((17, 19, 7), (4096, 3)),
        ((5, 6, 3), (2, 2000)),
    ],
)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_shapes_and_sizes(gl_clean, activation, shape, size):
    rng = np.random.default_rng(shape[2] * 7 + size[0])
    tensor = (rng.standard_normal(shape) * 4).astype(np.float32)
    got = _run_pipeline(gl_clean, gl_clean.pipeline, tensor, activation, size)
    want = reference_postprocess(tensor, activation, size)
    if size[0] == 1 or size[1] == 1:
        want_conf = want.confidence_masks
        np.testing.assert_allclose(got.confidence_masks, want_conf, rtol=2e-6, atol=2e-6)
    _assert_same(got, want, activation)


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 21])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_wrapped_tensor_layout(gl_clean, activation, channels):
    # A texture limit of 64 texels forces tensor rows to wrap onto several texture lines.
    pipeline = gl_clean.pipeline_with_limit(64)
    try:
        rng = np.random.default_rng(channels)
        tensor = (rng.standard_normal((9, 40, channels)) * 3).astype(np.float32)
        got = _run_pipeline(gl_clean, pipeline, tensor, activation, (53, 17))
        _assert_same(got, reference_postprocess(tensor, activation, (53, 17)), activation)
    finally:
        pipeline.release()


def test_tensor_too_large_for_gl_is_an_input_error(gl_clean):
    pipeline = gl_clean.pipeline_with_limit(16)
    try:
        with pytest.raises(gpu_seg.InputError, match="tensor"):
            _run_pipeline(gl_clean, pipeline, np.zeros((20, 20, 8), np.float32), "none", (4, 4))
    finally:
        pipeline.release()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("channels", [1, 3, 6])
def test_nan_and_inf_agree_with_reference(gl_clean, activation, channels):
    rng = np.random.default_rng(channels)
    tensor = (rng.standard_normal((8, 9, channels)) * 3).astype(np.float32)
    tensor[1, 2, 0] = np.nan
    tensor[4, 4, channels - 1] = np.inf
    tensor[6, 1, 0] = -np.inf
    tensor[2, 7, channels // 2] = np.nan
    for size in ((9, 8), (23, 17), (4, 3), (9, 20), (15, 8)):
        got = _run_pipeline(gl_clean, gl_clean.pipeline, tensor, activation, size)
        want = reference_postprocess(tensor, activation, size)
        np.testing.assert_array_equal(np.isnan(got.confidence_masks), np.isnan(want.confidence_masks))
        finite = np.isfinite(want.confidence_masks)
        np.testing.assert_array_equal(np.isinf(got.confidence_masks), np.isinf(want.confidence_masks))
        np.testing.assert_allclose(
            got.confidence_masks[finite], want.confidence_masks[finite], rtol=2e-6, atol=2e-6
        )
        np.testing.assert_array_equal(got.category_mask, want.category_mask)


def test_processor_matches_reference_and_owns_nothing_it_returns(processors):
    pp = processors("softmax")
    rng = np.random.default_rng(5)
    first_tensor = rng.standard_normal((20, 16, 4)).astype(np.float32)
    first = pp.process(first_tensor, (33, 41))
    kept = (first.confidence_masks.copy(), first.category_mask.copy())
    for _ in range(3):
        pp.process(rng.standard_normal((20, 16, 4)).astype(np.float32), (33, 41))
    # arrays returned earlier are the caller's: later frames do not touch them
    np.testing.assert_array_equal(first.confidence_masks, kept[0])
    np.testing.assert_array_equal(first.category_mask, kept[1])
    assert first.confidence_masks.flags.c_contiguous and first.confidence_masks.shape == (4, 41, 33)
    _assert_same(first, reference_postprocess(first_tensor, "softmax", (33, 41)), "softmax")


def test_preallocated_outputs_are_filled_and_returned(processors):
    pp = processors("sigmoid")
    tensor = np.random.default_rng(1).standard_normal((10, 12, 3)).astype(np.float32)
    conf = np.full((3, 7, 5), -1.0, np.float32)
    cat = np.full((7, 5), 77, np.uint8)
    result = pp.process(tensor, (5, 7), confidence_out=conf, category_out=cat)
    assert result.confidence_masks is conf and result.category_mask is cat
    _assert_same(result, reference_postprocess(tensor, "sigmoid", (5, 7)), "sigmoid")


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_are_converted(processors, dtype):
    tensor = np.random.default_rng(2).standard_normal((1, 6, 7, 3)).astype(dtype)
    got = processors("none").process(tensor, (9, 9))
    _assert_same(got, reference_postprocess(tensor.astype(np.float32), "none", (9, 9)), "none")


def test_only_requested_outputs_are_computed():
    tensor = np.random.default_rng(3).standard_normal((16, 16, 5)).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor(
        "softmax", output_confidence_masks=False, backend="gl"
    ) as cat_only:
        result = cat_only.process(tensor, (40, 30))
        assert result.confidence_masks is None
        np.testing.assert_array_equal(
            result.category_mask, reference_postprocess(tensor, "softmax", (40, 30)).category_mask
        )
        cat_objects = cat_only.live_gl_objects()
    with gpu_seg.SegmentationPostprocessor("softmax", output_category_mask=False, backend="gl") as conf_only:
        result = conf_only.process(tensor, (40, 30))
        assert result.category_mask is None
        conf_objects = conf_only.live_gl_objects()
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as both:
        both.process(tensor, (40, 30))
        assert both.live_gl_objects() > max(cat_objects, conf_objects)


def test_no_gl_allocation_in_steady_state(processors):
    pp = processors("softmax")
    rng = np.random.default_rng(4)
    pp.process(rng.standard_normal((32, 32, 6)).astype(np.float32), (64, 48))
    baseline = pp.live_gl_objects()
    builds = pp.stats["program_builds"]
    for _ in range(20):
        pp.process(rng.standard_normal((32, 32, 6)).astype(np.float32), (64, 48))
    assert pp.live_gl_objects() == baseline
    assert pp.stats["program_builds"] == builds


def test_stats_count_the_programs_the_bounded_cache_released(new_processor):
    """README: "48 programs (LRU, evictions in `stats`)". Tensor shapes are compiled into the
    programs, so 14 heights need more programs than the cache keeps."""
    pp = new_processor("softmax", backend="gl")
    rng = np.random.default_rng(5)
    for height in range(6, 20):
        pp.process(rng.standard_normal((height, 7, 3)).astype(np.float32), (12, 10))
    stats = pp.stats
    assert stats["programs"] <= 48 < stats["program_builds"]
    assert stats["program_evictions"] == stats["program_builds"] - stats["programs"] > 0


def test_pool_of_output_sizes_is_bounded(processors):
    pp = processors("none")
    tensor = np.random.default_rng(6).standard_normal((8, 8, 2)).astype(np.float32)
    counts = []
    for i in range(12):
        pp.process(tensor, (10 + i, 10 + i))
        counts.append(pp.live_gl_objects())
    assert counts[-1] == counts[-5]  # LRU pool: the count stops growing


def test_program_compile_error_is_a_shader_build_error(gl_clean):
    from gpu_seg.gl.programs import ProgramCache, ProgramDefinition

    cache = ProgramCache(gl_clean.ctx, 99, 400 if gl_clean.ctx.version_code >= 400 else 330, lambda: None)
    bad = ProgramDefinition.of(
        "fullscreen.vert.glsl",
        "activate.frag.glsl",
        ACTIVATION=1,
        TENSOR_W="oops",
        TENSOR_H=1,
        CHANNELS=1,
        LANES=1,
        GROUPS=1,
        LINE=1,
        WRAPPED=False,
    )
    with pytest.raises(gpu_seg.ShaderBuildError) as info:
        cache.get(bad)
    assert "oops" in info.value.source and "|" in info.value.source  # line-numbered source
    with pytest.raises(gpu_seg.ShaderBuildError):  # not rebuilt blindly
        cache.get(bad)
    assert cache.counters.program_builds == 1
    assert gl_clean.ctx.error in ("GL_NO_ERROR",)


FORMAT_CASES = [
    ("float16", None), ("uint8", None), ("float32", (4,)), ("float16", (2, 0)), ("uint8", (1, 1, 3)),
]  # fmt: skip


@pytest.mark.parametrize(("dtype", "channels"), FORMAT_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_confidence_dtypes_and_channel_subsets(activation, dtype, channels):
    rng = np.random.default_rng(len(dtype) + (len(channels) if channels else 0))
    tensor = (rng.standard_normal((14, 11, 5)) * 3).astype(np.float32)
    if activation == "none":  # values around [0, 1], where uint8 storage makes sense
        tensor = tensor / 6 + 0.5
    tensor[2, 3, 1] = np.nan
    options = {"confidence_dtype": dtype, "confidence_channels": channels}
    want = reference_postprocess(tensor, activation, (29, 23), **options)
    with gpu_seg.SegmentationPostprocessor(activation, backend="gl", **options) as pp:
        got = pp.process(tensor, (29, 23))
    assert got.confidence_masks.dtype == want.confidence_masks.dtype == np.dtype(dtype)
    assert got.confidence_masks.shape == (len(channels) if channels else 5, 23, 29)
    # Unactivated values go through identical float32 arithmetic: storage must be bit-exact. With
    # sigmoid/softmax the GPU's exp may differ by an ulp, which can move a value across a float16
    # or uint8 rounding boundary: one step at most.
    steps = 0 if activation == "none" else 1
    g, w = got.confidence_masks, want.confidence_masks
    both_nan = np.isnan(g) & np.isnan(w) if dtype != "uint8" else np.zeros(g.shape, bool)
    if dtype == "float16":
        diff = np.abs(g.view(np.uint16).astype(np.int32) - w.view(np.uint16).astype(np.int32))
    elif dtype == "uint8":
        diff = np.abs(g.astype(np.int32) - w.astype(np.int32))
    else:
        diff = (
            np.where(np.abs(g - w) <= 2e-6 * np.maximum(1.0, np.abs(w)), 0, np.inf)
            if steps
            else np.abs(g - w)
        )
    assert (both_nan | (diff <= steps)).all()


def test_float16_rounding_edges(gl_clean):
    values = np.array(
        [0.0, -0.0, 1.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 6e-8, 3e-8, 2.98e-8, 1e-10, 6.1035e-5,
         6.1e-5, 1.00048828125, 1.0004883, 0.1, -0.3, np.inf, -np.inf, np.nan, 5.960464477539063e-08],
        np.float32,
    )  # fmt: skip
    tensor = np.tile(values[None, :, None], (2, 1, 1)).astype(np.float32)
    size = (values.size, 2)
    got = np.empty((1, 2, values.size), np.float16)
    frame = make_frame(tensor, "none", size, confidence=True, category=False, confidence_format="float16")
    gl_clean.pipeline.process(frame, got, None)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16)
    assert (
        (got[0, 0].view(np.uint16) == want.view(np.uint16)) | (np.isnan(got[0, 0]) & np.isnan(want))
    ).all()


@pytest.mark.parametrize("channels", [None, (5, 1)])
def test_confidence_across_several_row_chunks(gl_clean, channels):
    # a texture limit of 64 rows and a 24-row tensor: groups are resampled in chunks of two
    pipeline = gl_clean.pipeline_with_limit(64)
    try:
        tensor = (np.random.default_rng(9).standard_normal((24, 10, 21)) * 3).astype(np.float32)
        selected = channels or tuple(range(21))
        conf = np.empty((len(selected), 31, 17), np.float32)
        frame = make_frame(
            tensor, "softmax", (17, 31), confidence=True, category=False, confidence_channels=channels
        )
        pipeline.process(frame, conf, None)
        want = reference_postprocess(tensor, "softmax", (17, 31), confidence_channels=channels)
        np.testing.assert_allclose(conf, want.confidence_masks, rtol=2e-6, atol=2e-6)
    finally:
        pipeline.release()


def test_evicted_pool_entries_free_their_memory(processors):
    """Cycling through many output sizes in one processor keeps memory flat (evictions release)."""
    import ctypes
    import gc
    import os

    def rss_kib() -> int:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open(f"/proc/{os.getpid()}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    pp = processors("softmax")
    tensor = np.random.default_rng(8).standard_normal((32, 32, 6)).astype(np.float32)
    for i in range(6):  # fill the pool
        pp.process(tensor, (500 + i, 500))
    start = rss_kib()
    for i in range(30):  # each size holds ~9 MiB of textures; a leak would add ~270 MiB
        pp.process(tensor, (520 + i, 500))
    growth = rss_kib() - start
    assert growth < 48 * 1024, f"RSS grew by {growth} KiB"
