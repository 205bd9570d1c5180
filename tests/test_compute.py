"""The compute-shader passes (``passes="compute"``, :mod:`gpu_seg.gl.compute`) on a real EGL context.

llvmpipe has GL 4.5, so compute shaders run here. Every result is compared with the numpy reference
(the tolerances of the other GL parity tests) and byte for byte with the fragment passes.
"""

from __future__ import annotations

import functools
import gc

import numpy as np
import pytest

import gpu_seg
from gpu_seg import reference_postprocess
from gpu_seg.gl.compute import compute_available
from gpu_seg.gl.pipeline import GLPipeline
from gpu_seg.gl.programs import ProgramCache, ProgramDefinition
from gpu_seg.gl.readback import BufferRead, ImageRead
from gpu_seg.inputs import make_frame
from gpu_seg.testing import lose_context

ACTIVATIONS = ("none", "sigmoid", "softmax")


@pytest.fixture
def pipelines(new_pipeline):
    def make(passes: str, **options) -> GLPipeline:
        if passes == "compute":  # compute passes run with the mapped readback (see the pipeline)
            options.setdefault("readback", "mapped")
        return new_pipeline(passes, **options)

    return make


def _tensor(seed, shape, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _run(pipeline, tensor, activation, size, *, confidence=True, category=True, **options):
    frame = make_frame(tensor, activation, size, confidence=confidence, category=category, **options)
    conf, cat = frame.allocate_confidence(), frame.allocate_category()
    pipeline.process(frame, conf, cat)
    return conf, cat


def _assert_reference(tensor, activation, size, conf, cat, channels=None):
    want = reference_postprocess(tensor, activation, size)
    if cat is not None:
        np.testing.assert_array_equal(cat, want.category_mask)
    if conf is not None:
        expected = want.confidence_masks if channels is None else want.confidence_masks[list(channels)]
        tol = 0.0 if activation == "none" else 2e-6
        np.testing.assert_allclose(conf, expected, rtol=tol, atol=tol)


def _assert_same(a, b):
    """Byte-identical results (NaNs included)."""
    for x, y in zip(a, b, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.tobytes() == y.tobytes()


def _reads(pipeline, tensor, activation, size, **options):
    """The readout the last frame started (what it reads from: buffers or textures)."""
    frame = make_frame(tensor, activation, size, confidence=True, category=True, **options)
    pipeline.submit(frame)
    readout = pipeline._readback._readout or pipeline._readback._slots[pipeline._readback._last].readout
    pipeline.wait()
    pipeline.collect(frame.allocate_confidence(), frame.allocate_category())
    return readout


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("channels", [1, 2, 3, 6, 21])
def test_compute_passes_match_the_reference_and_the_fragment_passes(pipelines, activation, channels):
    compute, fragment = pipelines("compute"), pipelines("fragment")
    for (height, width), size in (((9, 7), (23, 31)), ((16, 12), (12, 16)), ((11, 13), (5, 4))):
        shape = (height, width, channels)
        tensor = _tensor(channels * 7 + height, shape)
        got = _run(compute, tensor, activation, size)
        _assert_reference(tensor, activation, size, *got)
        _assert_same(got, _run(fragment, tensor, activation, size))


def test_the_compute_pipeline_reads_buffers(pipelines):
    compute = pipelines("compute")
    readout = _reads(compute, _tensor(1, (8, 8, 6)), "softmax", (17, 9))
    assert all(isinstance(read, BufferRead) for read in (*readout.confidence, readout.category))
    fragment = pipelines("fragment")
    readout = _reads(fragment, _tensor(1, (8, 8, 6)), "softmax", (17, 9))
    assert all(isinstance(read, ImageRead) for read in (*readout.confidence, readout.category))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("channels", [1, 2, 3, 6, 21])
def test_wrapped_layouts(gl_clean, pipelines, activation, channels):
    compute = pipelines("compute", max_texture_size=64)
    fragment = pipelines("fragment", max_texture_size=64)
    tensor = _tensor(channels, (7, 70, channels))
    size = (15, 11)
    got = _run(compute, tensor, activation, size)
    assert compute._tensors.get(next(iter(compute._tensors.slots))).layout.wrapped
    _assert_reference(tensor, activation, size, *got)
    _assert_same(got, _run(fragment, tensor, activation, size))


@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_sizes_smaller_than_the_pooled_slot(pipelines, readback):
    compute, fragment = pipelines("compute"), pipelines("fragment")
    if readback == "mapped" and compute._gl is None:
        pytest.skip("no GL_ARB_buffer_storage")
    compute.readback = fragment.readback = readback
    tensor = _tensor(3, (10, 9, 6))
    for size in ((41, 37), (40, 37), (33, 20), (7, 36), (41, 37), (1, 1), (3, 2)):
        got = _run(compute, tensor, "softmax", size)
        _assert_reference(tensor, "softmax", size, *got)
        _assert_same(got, _run(fragment, tensor, "softmax", size))
    assert len(compute._outputs.slots) <= 2  # the smaller sizes were served by the covering slot


@pytest.mark.parametrize("readback", ["direct", "mapped"])
@pytest.mark.parametrize("channels", [(2, 0), (5,), (0, 0, 4), (20, 3, 11, 0, 19, 7, 1, 2, 6)])
def test_channel_subsets(pipelines, readback, channels):
    compute, fragment = pipelines("compute"), pipelines("fragment")
    if readback == "mapped" and compute._gl is None:
        pytest.skip("no GL_ARB_buffer_storage")
    compute.readback = fragment.readback = readback
    count = 21 if max(channels) > 5 else 6
    tensor = _tensor(len(channels), (9, 11, count))
    size = (19, 14)
    got = _run(compute, tensor, "softmax", size, confidence_channels=channels)
    _assert_reference(tensor, "softmax", size, *got, channels=channels)
    _assert_same(got, _run(fragment, tensor, "softmax", size, confidence_channels=channels))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("channels", [1, 4, 6])
def test_nan_and_infinite_inputs(pipelines, activation, channels):
    compute, fragment = pipelines("compute"), pipelines("fragment")
    tensor = _tensor(11, (8, 9, channels))
    flat = tensor.reshape(-1)
    flat[::7] = np.nan
    flat[3::11] = np.inf
    flat[5::13] = -np.inf
    size = (21, 17)
    got = _run(compute, tensor, activation, size)
    _assert_same(got, _run(fragment, tensor, activation, size))
    want = reference_postprocess(tensor, activation, size)
    np.testing.assert_array_equal(got[1], want.category_mask)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want.confidence_masks))
    finite = ~np.isnan(want.confidence_masks)
    tol = 0.0 if activation == "none" else 2e-6
    np.testing.assert_allclose(got[0][finite], want.confidence_masks[finite], rtol=tol, atol=tol)


@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_masks_split_over_several_dispatches_and_the_fragment_fallback(pipelines, readback):
    """A small storage block limit: the planes take several dispatches; past it, fragment passes."""
    size = (13, 9)  # planes of 468 bytes, a stride of 512; rows of 13 * 2 * 21 * 4 = 2184 bytes
    tensor = _tensor(5, (2, 7, 21))
    fragment = pipelines("fragment")
    want = _run(fragment, tensor, "softmax", size)
    for limit, buffers in ((5 * 512, True), (8 * 512, True), (2048, False)):
        compute = pipelines("compute", max_storage_block=limit)
        if readback == "mapped" and compute._gl is None:
            pytest.skip("no GL_ARB_buffer_storage")
        compute.readback = readback
        got = _run(compute, tensor, "softmax", size)
        _assert_same(got, want)
        readout = _reads(compute, tensor, "softmax", size)
        # The direct readback runs the fragment passes (it cannot read buffers on every driver).
        assert isinstance(readout.confidence[0], BufferRead) is (buffers and readback == "mapped"), limit


def _built(pipeline) -> set[tuple[str, bool]]:
    """(shader name, compute) of every program the pipeline's cache holds."""
    return {(definition.name, definition.compute) for definition in pipeline.programs._entries}


@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_the_tensor_resolution_passes_run_as_compute_shaders(pipelines, readback):
    """The softmax statistics and the activation have compute forms too (whatever the readback: they
    write textures); the fragment pipeline keeps the fragment forms. Same bits either way."""
    compute, fragment = pipelines("compute"), pipelines("fragment")
    if readback == "mapped" and compute._gl is None:
        pytest.skip("no GL_ARB_buffer_storage")
    compute.readback = readback
    tensor = _tensor(4, (9, 10, 5))
    tensor.reshape(-1)[::9] = np.nan
    for activation in ("softmax", "sigmoid"):
        _assert_same(
            _run(compute, tensor, activation, (23, 17)), _run(fragment, tensor, activation, (23, 17))
        )
    names = {"activate", "softmax_stats"}
    assert {(name, True) for name in names} <= _built(compute)
    assert not {(name, False) for name in names} & _built(compute)
    assert {(name, False) for name in names} <= _built(fragment)


def test_planes_lying_back_to_back_are_read_back_with_one_copy(gl_clean):
    """The mapped readback copies a run of planes that lie back to back in one buffer (and go back
    to back into its slot) as one range; a gap (a 256-byte-aligned plane stride), another buffer or
    a texture starts a new copy."""
    from gpu_seg.gl.readback import _coalesced

    planes, other = gl_clean.ctx.buffer(reserve=4096), gl_clean.ctx.buffer(reserve=1024)
    texture = gl_clean.ctx.texture((4, 4), 1, dtype="f4")
    try:
        whole = [BufferRead(planes, 256 * k, 8, 8, "f4", 4) for k in range(3)]  # 256 bytes each
        assert [c[1:] for c in _coalesced(whole, [0, 256, 512])] == [(0, 0, 768)]
        gap = [BufferRead(planes, 512 * k, 10, 10, "f4", 4) for k in range(3)]  # 400 bytes, stride 512
        assert [c[1:] for c in _coalesced(gap, [0, 400, 800])] == [
            (0, 0, 400),
            (512, 400, 400),
            (1024, 800, 400),
        ]
        mixed = [whole[0], whole[1], BufferRead(other, 0, 8, 8, "f4", 4), whole[2]]
        assert len(_coalesced(mixed, [0, 256, 512, 768])) == 3
        image = ImageRead(texture, None, 0, 4, 4, "f4", 4)
        assert len(_coalesced([whole[0], image, whole[1]], [0, 256, 320])) == 3
        assert len(_coalesced([whole[0], whole[1]], [0, 512])) == 2  # not back to back in the slot
    finally:
        for obj in (planes, other, texture):
            obj.release()


def test_the_category_shortcut_keeps_the_fragment_category_pass(pipelines):
    compute = pipelines("compute")
    compute.category_shortcut = True
    readout = _reads(compute, _tensor(1, (8, 8, 6)), "softmax", (17, 9))
    assert isinstance(readout.category, ImageRead)
    assert all(isinstance(read, BufferRead) for read in readout.confidence)


def test_compute_passes_need_the_mapped_readback(pipelines):
    compute = pipelines("compute")
    compute.readback = "direct"
    readout = _reads(compute, _tensor(1, (8, 8, 6)), "softmax", (17, 9))
    assert all(isinstance(read, ImageRead) for read in (*readout.confidence, readout.category))


@pytest.mark.parametrize("fmt", ["float16", "uint8"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_packed_confidence_formats_run_on_the_compute_passes(pipelines, fmt, activation):
    """Float16 and uint8 masks: resize_columns.comp stores them (encode.glsl) into R16UI/R8UI
    textures, read back like the fragment passes' textures: the same bytes, NaN/inf inputs, more
    masks than one dispatch binds (21 > 8), channel subsets and frames smaller than the pooled slot
    (read through a viewport) included."""
    compute, fragment = pipelines("compute"), pipelines("fragment")
    options = {"confidence_format": fmt}
    tensor = _tensor(6, (9, 8, 21))
    flat = tensor.reshape(-1)
    flat[::7], flat[3::11], flat[5::13] = np.nan, np.inf, -np.inf
    for size in ((20, 19), (13, 7), (20, 19), (1, 1)):
        _assert_same(
            _run(compute, tensor, activation, size, **options),
            _run(fragment, tensor, activation, size, **options),
        )
    subset = {"confidence_channels": (20, 3, 11, 0, 19, 7, 1, 2, 6), **options}
    _assert_same(
        _run(compute, tensor, activation, (17, 9), **subset),
        _run(fragment, tensor, activation, (17, 9), **subset),
    )
    readout = _reads(compute, tensor, activation, (20, 19), **options)
    assert isinstance(readout.category, BufferRead) and isinstance(readout.confidence[0], ImageRead)
    assert readout.confidence[0].texture.dtype == ("u2" if fmt == "float16" else "u1")
    assert ("resize_columns", True) in _built(compute) and ("resize_columns", False) not in _built(compute)


def test_no_gl_object_growth_and_trim(pipelines, gl_clean):
    compute = pipelines("compute")
    shapes = [((9, 7, 6), (23, 31)), ((12, 10, 21), (40, 30)), ((8, 8, 1), (16, 16))]
    for shape, size in shapes:
        _run(compute, _tensor(1, shape), "softmax", size)
    created, live = compute.objects_created, compute.live_objects()
    for i in range(30):
        shape, size = shapes[i % 3]
        _run(compute, _tensor(i, shape), "softmax", size)
    assert (compute.objects_created, compute.live_objects()) == (created, live)
    compute.trim()
    assert compute.live_objects() == 0
    tensor = _tensor(2, (9, 7, 6))
    _assert_reference(tensor, "softmax", (23, 31), *_run(compute, tensor, "softmax", (23, 31)))
    assert gl_clean.ctx.error == "GL_NO_ERROR"


def test_passes_are_chosen_from_the_renderer_and_checked(pipelines):
    pipeline = pipelines("auto")
    software = "llvmpipe" in pipeline.renderer.lower()
    if software:  # measured: the fragment passes are faster on llvmpipe
        assert pipeline.passes == "fragment"
    pipeline.passes = "bogus"
    with pytest.raises(gpu_seg.InputError, match="gl_passes"):
        _run(pipeline, _tensor(1, (4, 4, 2)), "none", (4, 4))
    pipeline.passes = "compute"
    tensor = _tensor(1, (4, 4, 2))
    _assert_reference(tensor, "none", (5, 6), *_run(pipeline, tensor, "none", (5, 6)))


# ----------------------------------------------------------------------------- the processor
@pytest.fixture
def make_pp(new_processor):
    return functools.partial(new_processor, gl_passes="compute")


def test_gl_passes_is_validated():
    with pytest.raises(gpu_seg.InputError, match="gl_passes"):
        gpu_seg.SegmentationPostprocessor("softmax", gl_passes="vertex")
    with pytest.raises(gpu_seg.InputError, match=r"gl_passes.*mapped readback"):
        gpu_seg.SegmentationPostprocessor("softmax", gl_passes="compute", readback="direct")


def test_compute_passes_asked_for_are_the_ones_that_run(make_pp):
    """``gl_passes="compute"`` with the readback left to choose: the compute passes need the mapped
    readback, so it is the one chosen (llvmpipe chose the direct one, and every process() frame ran
    the fragment passes while stats said "compute")."""
    pp = make_pp(backend="gl")
    tensor = _tensor(3, (12, 10, 5))
    calls = []
    pp.process(tensor, SIZE)  # the first generation
    compute = pp._supervisor.generation.pipeline._compute
    confidence = compute.confidence
    compute.confidence = lambda *args, **kwargs: calls.append(1) or confidence(*args, **kwargs)
    _assert_correct(pp.process(tensor, SIZE), tensor)
    assert pp.stats["gl_passes"] == "compute" and calls == [1]


def _compute_pp(make_pp, **kwargs):
    pp = make_pp(**kwargs)
    if pp.stats["gl_passes"] != "compute":
        pytest.skip("no GL 4.3 compute shaders")
    return pp


SIZE = (37, 29)


def _assert_correct(result, tensor, size=SIZE):
    want = reference_postprocess(tensor, "softmax", size)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


def test_views_and_frames_in_flight_on_the_compute_path(make_pp):
    pp = _compute_pp(make_pp, backend="gl", readback="mapped")
    tensors = [_tensor(20 + i, (12, 10, 5)) for i in range(3)]
    with pp.process_view(tensors[0], SIZE) as view:
        assert view.zero_copy
        _assert_correct(view, tensors[0])
    pending = [pp.submit(t, SIZE) for t in tensors]
    assert all(p.in_flight for p in pending)
    for p, tensor in zip(pending, tensors, strict=True):
        _assert_correct(p.result(), tensor)


@pytest.mark.parametrize("readback", ["auto", "mapped"])  # auto: mapped too (compute needs it)
def test_a_real_context_loss_on_the_compute_path_is_recomputed(make_pp, readback):
    events = []
    pp = _compute_pp(make_pp, backend="auto", readback=readback, on_event=events.append)
    tensors = [_tensor(30 + i, (12, 10, 5)) for i in range(3)]
    _assert_correct(pp.process(tensors[0], SIZE), tensors[0])
    if readback == "mapped":
        pending = [pp.submit(t, SIZE) for t in tensors]
        lose_context(pp)  # a real eglDestroyContext under the queued frames
        for p, tensor in zip(pending, tensors, strict=True):
            result = p.result()
            assert result.backend == "gl"
            _assert_correct(result, tensor)
    else:
        lose_context(pp)
        result = pp.process(tensors[1], SIZE)
        assert result.backend == "gl"
        _assert_correct(result, tensors[1])
    assert [e.kind.value for e in events] == ["context_lost", "rebuilt"]
    assert pp.stats["gl_passes"] == "compute"


def test_live_gl_objects_stay_flat_over_many_frames(make_pp):
    pp = _compute_pp(make_pp, backend="gl")
    tensor = _tensor(4, (12, 10, 5))
    for _ in range(3):
        pp.process(tensor, SIZE)
    live = pp.live_gl_objects()
    for i in range(60):
        result = pp.process(tensor, SIZE if i % 2 else (30, 20))
    _assert_correct(result, tensor)
    gc.collect()
    assert pp.live_gl_objects() == live


# ----------------------------------------------------------------------------- programs
def test_a_broken_compute_shader_is_a_line_numbered_build_error(gl_clean):
    if not compute_available(gl_clean.ctx):
        pytest.skip("no GL 4.3 compute shaders")
    cache = ProgramCache(gl_clean.ctx, 97, gl_clean.glsl, lambda: None)
    bad = ProgramDefinition.compute_of(
        "resize_columns.comp.glsl", TENSOR_H="broken", ALL_CHANNELS=True, IMAGES=0, OUTPUT_FORMAT=0
    )
    with pytest.raises(gpu_seg.ShaderBuildError) as info:
        cache.get(bad)
    assert "const int TENSOR_H = broken;" in info.value.source
    assert "   1| #version 430 core" in info.value.source
    with pytest.raises(gpu_seg.ShaderBuildError):  # remembered, not rebuilt
        cache.get(bad)
    assert cache.counters.program_builds == 1


def test_compute_programs_are_bounded_across_tensor_shapes(gl_clean):
    if not compute_available(gl_clean.ctx):
        pytest.skip("no GL 4.3 compute shaders")
    programs = ProgramCache(gl_clean.ctx, 1, gl_clean.glsl, lambda: None, capacity=6)
    pipeline = GLPipeline(gl_clean.ctx, programs, passes="compute")
    try:
        counts = []
        for i in range(12):
            tensor = _tensor(i, (6 + i, 7, 3))
            conf, cat = _run(pipeline, tensor, "softmax", (23, 19))
            _assert_reference(tensor, "softmax", (23, 19), conf, cat)
            assert len(pipeline.programs) <= 6
            counts.append(pipeline.live_objects())
        assert programs.counters.program_evictions > 0
        assert len(set(counts[-6:])) == 1, counts
    finally:
        pipeline.release()
