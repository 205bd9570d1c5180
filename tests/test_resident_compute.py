"""GPU-resident frames on the compute passes (``passes="compute"``; llvmpipe has GL 4.5): the lent
textures, filled from the storage buffers by compute shaders, are bit-identical to the fragment
route's and to ``process()``; the CUDA path's copy plan (:func:`gpu_seg.cuda.interop.buffer_copies`),
run here on host copies of the buffers, gives the same bytes; lifetimes and GL object counts are
unchanged."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gpu_seg
from gpu_seg import GLTensor, reference_postprocess
from gpu_seg.cuda.interop import buffer_copies, texture_copies
from gpu_seg.gl.compute import compute_available
from gpu_seg.gl.resident import GLSource
from gpu_seg.inputs import make_frame
from gpu_seg.types import Activation

ACTIVATIONS = [a.value for a in Activation]
#: Output sizes (width, height): widths that are not multiples of 4 (a partial last quad), 1 x 1.
SIZES = [(13, 11), (5, 3), (16, 9), (1, 1), (31, 2)]


@pytest.fixture
def pipelines(new_pipeline):
    return new_pipeline


def _tensor(shape, seed, nans=False):
    tensor = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)
    if nans:
        flat = tensor.reshape(-1)
        flat[::7] = np.nan
        flat[3::11] = np.inf
        flat[5::13] = -np.inf
    return tensor


def _read_textures(images, dtype=np.float32):
    width, height = images.width, images.height
    conf = np.stack([np.frombuffer(t.read(), dtype).reshape(height, width) for t in images.confidence])
    cat = None if images.category is None else np.frombuffer(images.category.read(), np.uint8)
    return conf, None if cat is None else cat.reshape(height, width)


def _host(pipeline, tensor, activation, size, **options):
    frame = make_frame(tensor, activation, size, confidence=True, category=True, **options)
    conf, cat = frame.allocate_confidence(), frame.allocate_category()
    pipeline.process(frame, conf, cat)
    return conf, cat


def _resident(pipeline, tensor, activation, size, source=None, lend_textures=True, **options):
    frame = make_frame(tensor, activation, size, confidence=True, category=True, **options)
    return pipeline.submit_resident(frame, source, lend_textures)


def _run_copy_plan(images, itemsize, dtype):
    """The CUDA path's copies (texture_copies + buffer_copies), run on host copies of the GL objects."""
    width, height = images.width, images.height
    masks = len(images.confidence_buffers) or len(images.confidence)
    arrays = {"confidence": np.zeros(masks * height * width * itemsize, np.uint8),
              "category": np.zeros(height * width, np.uint8)}  # fmt: skip
    for copy in buffer_copies(images, itemsize):
        data = np.frombuffer(copy.buffer.read(), np.uint8)
        for row in range(copy.height):
            start = copy.source_offset + row * copy.source_pitch
            target = copy.destination_offset + row * copy.row_bytes
            arrays[copy.destination][target : target + copy.row_bytes] = data[start : start + copy.row_bytes]
    for copy in texture_copies(images, itemsize):
        texels = np.frombuffer(copy.texture.read(alignment=1), np.uint8).reshape(copy.texture.height, -1)
        block = texels[: copy.height, : copy.row_bytes].reshape(-1)
        arrays[copy.destination][copy.destination_offset : copy.destination_offset + block.size] = block
    return arrays["confidence"].view(dtype).reshape(masks, height, width), arrays["category"].reshape(
        height, width
    )


# ----------------------------------------------------------------------------- the pipeline
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("channels", [1, 2, 3, 6, 21])
def test_compute_resident_textures_equal_the_fragment_ones_and_process(pipelines, activation, channels):
    compute, fragment = pipelines("compute", readback="mapped"), pipelines("fragment")
    for index, size in enumerate(SIZES):
        tensor = _tensor((9, 7, channels), channels * 10 + index, nans=index == 2)
        images = _resident(compute, tensor, activation, size)
        assert images.passes == "compute" and images.category_packed is None
        # stored straight into the lent textures: no buffer holds the results
        assert not images.confidence_buffers and images.category_buffer is None
        assert {t.size for t in (*images.confidence, images.category)} == {size}
        assert images.category.dtype == "u1" and {t.dtype for t in images.confidence} == {"f4"}
        got = _read_textures(images)
        want = _read_textures(_resident(fragment, tensor, activation, size))
        host = _host(compute, tensor, activation, size)  # compute passes and the mapped readback
        for a, b, c in zip(got, want, host, strict=True):
            assert a.tobytes() == b.tobytes() == c.tobytes()  # bits, NaN payloads included
        if index != 2:
            reference = reference_postprocess(tensor, activation, size)
            np.testing.assert_array_equal(got[1], reference.category_mask)


@pytest.mark.parametrize("channels", [(2, 0), (5,), (20, 3, 11, 0, 19, 7, 1, 2, 6)])
def test_channel_subsets(pipelines, channels):
    compute, fragment = pipelines("compute"), pipelines("fragment")
    tensor = _tensor((9, 11, 21), len(channels))
    options = {"confidence_channels": channels}
    images = _resident(compute, tensor, "softmax", (19, 14), **options)
    assert images.passes == "compute" and len(images.confidence) == len(channels)
    got = _read_textures(images)
    want = _read_textures(_resident(fragment, tensor, "softmax", (19, 14), **options))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize(("shape", "kind"), [((6, 50, 6), "hwc"), ((7, 30, 2), "hwc"), ((5, 9, 4), "texels")])
def test_gl_sources_and_wrapped_layouts(pipelines, gl_clean, shape, kind):
    compute = pipelines("compute", max_texture_size=64)
    fragment = pipelines("fragment", max_texture_size=64)
    tensor = _tensor(shape, shape[2])
    buffer = gl_clean.ctx.buffer(tensor.tobytes())
    try:
        results = []
        for pipeline in (compute, fragment):
            source = GLSource(kind, buffer, *shape)
            results.append(_read_textures(_resident(pipeline, tensor, "softmax", (17, 9), source)))
        assert all(a.tobytes() == b.tobytes() for a, b in zip(*results, strict=True))
        reference = reference_postprocess(tensor, "softmax", (17, 9))
        np.testing.assert_array_equal(results[0][1], reference.category_mask)
    finally:
        buffer.release()


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_a_texture_source_is_relaid_by_a_compute_shader(pipelines, gl_clean, channels):
    """A texture input (and a padded HWC buffer) is relaid into the tensor texture by the compute
    form of tensor_relayout with the compute passes: the same bits as the fragment form."""
    compute, fragment = pipelines("compute"), pipelines("fragment")
    tensor = _tensor((6, 9, channels), 40 + channels, nans=True)
    components = 4 if channels == 3 else channels  # RGB32F is not a render/image format: pad to RGBA
    texels = np.zeros((6, 9, components), np.float32)
    texels[..., :channels] = tensor
    texture = gl_clean.ctx.texture((9, 6), components, texels.tobytes(), dtype="f4")
    buffer = gl_clean.ctx.buffer(tensor.tobytes())
    try:
        for kind, obj in (("texture", texture), ("hwc", buffer)):
            source = GLSource(kind, obj, 6, 9, channels)
            got = _read_textures(_resident(compute, tensor, "softmax", (13, 10), source))
            want = _read_textures(_resident(fragment, tensor, "softmax", (13, 10), source))
            assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True)), kind
        built = {(d.name, d.compute) for d in compute.programs._entries}
        assert ("tensor_relayout", True) in built and ("tensor_relayout", False) not in built
    finally:
        texture.release()
        buffer.release()


@pytest.mark.parametrize("fmt", ["float32", "float16", "uint8"])
def test_fewer_image_units_take_more_dispatches(pipelines, fmt):
    """A context that allows fewer images per dispatch (lowered here to 1 and 3) stores the masks
    over more dispatches: the same bits, channel subsets included."""
    fragment = pipelines("fragment")
    tensor = _tensor((8, 9, 7), 12, nans=True)
    dtype = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}[fmt]
    for limit in (1, 3):
        compute = pipelines("compute", max_images=limit)
        assert compute._compute.max_images == limit
        for options in ({}, {"confidence_channels": (6, 0, 3, 5, 1)}):
            options = {**options, "confidence_format": fmt}
            got = _read_textures(_resident(compute, tensor, "softmax", (15, 11), **options), dtype)
            want = _read_textures(_resident(fragment, tensor, "softmax", (15, 11), **options), dtype)
            assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True)), (limit, options)


def test_the_image_limit_comes_from_the_context(gl_clean):
    from gpu_seg.gl.compute import images_per_dispatch

    if not compute_available(gl_clean.ctx):
        pytest.skip("no GL 4.3 compute shaders")
    assert 1 <= images_per_dispatch() <= 8
    assert gl_clean.ctx.error == "GL_NO_ERROR"


def test_the_cuda_copy_plan_gives_the_masks(pipelines):
    """Without lend_textures the compute frame fills no texture; its buffers, copied as the CUDA path
    copies them (plane starts, packed rows of quads(W) uints read W bytes wide), are the masks."""
    compute, fragment = pipelines("compute"), pipelines("fragment")
    for channels, size in ((6, (13, 11)), (1, (5, 3)), (21, (31, 2)), (3, (1, 1))):
        tensor = _tensor((9, 7, channels), channels)
        host = _host(fragment, tensor, "softmax", size)
        images = _resident(compute, tensor, "softmax", size, lend_textures=False)
        assert images.confidence == () and images.category is None and images.category_packed is None
        assert images.passes == "compute" and not texture_copies(images, 4)
        assert len(buffer_copies(images, 4)) == channels + 1
        got = _run_copy_plan(images, 4, np.float32)
        assert got[0].tobytes() == host[0].tobytes() and got[1].tobytes() == host[1].tobytes()
        images = _resident(fragment, tensor, "softmax", size, lend_textures=False)  # the texture route
        assert images.passes == "fragment" and not buffer_copies(images, 4)
        got = _run_copy_plan(images, 4, np.float32)
        assert got[0].tobytes() == host[0].tobytes() and got[1].tobytes() == host[1].tobytes()


@pytest.mark.parametrize("fmt", ["float16", "uint8"])
def test_packed_formats_run_on_the_compute_passes(pipelines, fmt):
    compute, fragment = pipelines("compute"), pipelines("fragment")
    tensor = _tensor((9, 8, 5), 6)
    options = {"confidence_format": fmt}
    dtype = np.float16 if fmt == "float16" else np.uint8
    images = _resident(compute, tensor, "sigmoid", (21, 19), **options)
    assert images.passes == "compute" and images.category_packed is None and not images.confidence_buffers
    assert {t.dtype for t in images.confidence} == {"u2" if fmt == "float16" else "u1"}
    got = _read_textures(images, dtype)
    want = _read_textures(_resident(fragment, tensor, "sigmoid", (21, 19), **options), dtype)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True))
    host = _host(fragment, tensor, "sigmoid", (21, 19), **options)
    plan = _run_copy_plan(_resident(compute, tensor, "sigmoid", (21, 19), lend_textures=False, **options),
                          np.dtype(dtype).itemsize, dtype)  # fmt: skip
    assert plan[0].tobytes() == host[0].tobytes() and plan[1].tobytes() == host[1].tobytes()


def test_the_category_shortcut_and_a_small_storage_limit_keep_the_fragment_passes(pipelines):
    tensor = _tensor((8, 8, 6), 1)
    shortcut = pipelines("compute")
    shortcut.category_shortcut = True
    images = _resident(shortcut, tensor, "softmax", (17, 9))
    assert images.passes == "mixed" and images.category_packed is not None  # confidence: compute
    small = pipelines("compute", max_storage_block=128)  # the category takes 180 bytes, a plane 768
    images = _resident(small, tensor, "softmax", (17, 9))
    assert images.passes == "fragment" and not images.confidence_buffers and images.category_buffer is None
    want = _read_textures(_resident(pipelines("fragment"), tensor, "softmax", (17, 9)))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(_read_textures(images), want, strict=True))


def test_no_gl_object_growth_and_trim(pipelines, gl_clean):
    compute = pipelines("compute")
    cases = [((9, 7, 6), (23, 31)), ((12, 10, 21), (41, 30)), ((8, 8, 1), (13, 16))]
    for shape, size in cases:
        _resident(compute, _tensor(shape, 1), "softmax", size)
        _resident(compute, _tensor(shape, 1), "softmax", size, lend_textures=False)
    created, live = compute.objects_created, compute.live_objects()
    for i in range(30):
        shape, size = cases[i % 3]
        _resident(compute, _tensor(shape, i), "softmax", size, lend_textures=bool(i % 2))
    assert (compute.objects_created, compute.live_objects()) == (created, live)
    compute.trim()
    assert compute.live_objects() == 0
    tensor = _tensor((9, 7, 6), 2)
    _, cat = _read_textures(_resident(compute, tensor, "none", (23, 31)))
    np.testing.assert_array_equal(cat, reference_postprocess(tensor, "none", (23, 31)).category_mask)
    assert gl_clean.ctx.error == "GL_NO_ERROR"


# ----------------------------------------------------------------------------- the processor
def _compute_pp(activation="softmax", **options) -> gpu_seg.SegmentationPostprocessor:
    pp = gpu_seg.SegmentationPostprocessor(activation, backend="gl", gl_passes="compute", **options)
    if pp.stats["gl_passes"] is None:
        pp.process(np.zeros((2, 2, 1), np.float32))
    if pp.stats["gl_passes"] != "compute":
        pp.close()
        pytest.skip("no GL 4.3 compute shaders")
    return pp


def _no_shortcut(pp) -> None:
    pp._supervisor.generation.pipeline.category_shortcut = False  # llvmpipe's fragment-only shortcut


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_processor_resident_frames_match_process(activation):
    tensor = _tensor((9, 7, 6), 3)
    with (
        _compute_pp(activation, readback="mapped") as pp,
        gpu_seg.SegmentationPostprocessor(activation, backend="gl", gl_passes="fragment") as fragment_pp,
    ):
        _no_shortcut(pp)
        buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
        pp.process(tensor, (64, 48))  # a larger pooled slot of this kind: resident slots stay exact
        for size in [(13, 11), (5, 3), (64, 48), (1, 1), (13, 11)]:
            host = pp.process(tensor, size)
            assert (
                host.confidence_masks.tobytes()
                == fragment_pp.process(tensor, size).confidence_masks.tobytes()
            )
            for source in (tensor, GLTensor(buffer, tensor.shape)):
                with pp.process_resident(source, size) as masks:
                    assert pp.stats["last_resident_passes"] == "compute"
                    assert {t.size for t in masks.confidence_textures} == {size}
                    assert masks.category_texture.size == size
                    assert masks.read_confidence().tobytes() == host.confidence_masks.tobytes()
                    assert masks.read_category().tobytes() == host.category_mask.tobytes()
        pp.run_gl(lambda ctx: buffer.release())


def test_processor_lifetimes_are_unchanged():
    tensor = _tensor((6, 5, 2), 1)
    with _compute_pp() as pp:
        _no_shortcut(pp)
        first = pp.process_resident(tensor)
        assert pp.stats["last_resident_passes"] == "compute"
        pp.process(tensor)
        with pytest.raises(gpu_seg.ExpiredResultError, match="superseded"):
            first.read_confidence()
        second = pp.process_resident(tensor)
        second.release()
        with pytest.raises(gpu_seg.ExpiredResultError, match="released"):
            _ = second.category_texture
        third = pp.process_resident(tensor)
        pp.trim()
        with pytest.raises(gpu_seg.ExpiredResultError, match="trim"):
            third.read_category()
        fourth = pp.process_resident(tensor)  # after trim: everything rebuilt
        np.testing.assert_array_equal(fourth.read_category(), pp.process(tensor).category_mask)
        fifth = pp.process_resident(tensor)
        gpu_seg.testing.lose_context(pp)
        with pytest.raises(gpu_seg.ContextLostError):
            fifth.read_confidence()
        expected = pp.process(tensor, (9, 7)).category_mask  # recomputed on a new generation
        again = pp.process_resident(tensor, (9, 7))
        assert again.generation == 2
        np.testing.assert_array_equal(again.read_category(), expected)
    with pytest.raises(gpu_seg.ExpiredResultError, match="closed"):
        _ = again.confidence_textures


def test_processor_no_gl_object_growth_over_many_frames():
    tensor = _tensor((9, 7, 3), 9)
    with _compute_pp() as pp:
        _no_shortcut(pp)
        buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))

        def frames(n):
            for i in range(n):
                size = [(32, 24), (13, 11)][i % 2]
                source = [tensor, GLTensor(buffer, tensor.shape)][i % 2]
                pp.process_resident(source, size)
                pp.process(tensor, size)

        frames(6)
        objects, builds = pp.live_gl_objects(), pp.stats["program_builds"]
        frames(60)
        gc.collect()
        assert pp.live_gl_objects() == objects
        assert pp.stats["program_builds"] == builds
        assert pp.stats["last_resident_passes"] == "compute"
        pp.run_gl(lambda ctx: buffer.release())
