"""GPU-resident frames (``process_resident``) on real EGL contexts: parity with the reference and with
``process()``, GL-side inputs (buffers, textures, padded and wrapped layouts), lifetimes, real context
losses, bad input, and no GL growth over many frames."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_seg
from gpu_seg import GLTensor, reference_postprocess, testing
from gpu_seg.gl.resident import GLSource, raw_line
from gpu_seg.inputs import make_frame
from gpu_seg.types import Activation

from .test_attached import display, glfw_windows  # noqa: F401  (fixtures: an application window)

ACTIVATIONS = [a.value for a in Activation]


def _tensor(shape, seed):
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)


def _assert_reference(conf, cat, tensor, activation, size, **options):
    """The same checks as the GL parity tests (tests/test_gl.py): a few ulp for activations, exact
    for "none", identical category."""
    want = reference_postprocess(tensor, activation, size, **options)
    tol = 2e-6 if activation != "none" else 0.0
    np.testing.assert_allclose(conf, want.confidence_masks, rtol=tol, atol=tol)
    np.testing.assert_array_equal(cat, want.category_mask)


def _upload(pp, tensor):
    """A GL buffer holding ``tensor`` (HWC float32), created in the processor's owned context."""
    return pp.run_gl(lambda ctx: ctx.buffer(np.ascontiguousarray(tensor, np.float32).tobytes()))


def _release(pp, *objects):
    pp.run_gl(lambda ctx: [obj.release() for obj in objects])


@pytest.fixture(scope="module")
def resident_pps():
    cache: dict[str, gpu_seg.SegmentationPostprocessor] = {}

    def get(activation: str) -> gpu_seg.SegmentationPostprocessor:
        if activation not in cache:
            cache[activation] = gpu_seg.SegmentationPostprocessor(activation, backend="gl")
        return cache[activation]

    yield get
    for pp in cache.values():
        pp.close()


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 21])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_numpy_and_buffer_inputs_match_reference_and_process(resident_pps, activation, channels):
    pp = resident_pps(activation)
    tensor = _tensor((9, 7, channels), channels)
    size = (13, 11)  # not a multiple of 4 wide: the category unpack handles a partial last quad
    host = pp.process(tensor, size)
    with pp.process_resident(tensor, size) as masks:
        assert [t.size for t in masks.confidence_textures] == [size] * channels
        assert masks.category_texture.size == size and masks.category_texture.dtype == "u1"
        conf, cat = masks.read_confidence(), masks.read_category()
    _assert_reference(conf, cat, tensor, activation, size)
    np.testing.assert_array_equal(conf, host.confidence_masks)  # the same programs: the same bits
    np.testing.assert_array_equal(cat, host.category_mask)
    buffer = _upload(pp, tensor)
    try:
        masks = pp.process_resident(GLTensor(buffer, tensor.shape), size)
        np.testing.assert_array_equal(masks.read_confidence(), host.confidence_masks)
        np.testing.assert_array_equal(masks.read_category(), host.category_mask)
    finally:
        _release(pp, buffer)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", ["f4", "f2"])
def test_texture_inputs(resident_pps, channels, dtype):
    pp = resident_pps("softmax")
    tensor = _tensor((10, 6, channels), 40 + channels)
    if dtype == "f2":
        tensor = tensor.astype(np.float16).astype(np.float32)  # what the texture can hold
    data = tensor.astype(np.float16 if dtype == "f2" else np.float32).tobytes()
    # A mipmap min filter on a one-level texture makes it incomplete for its own sampling state: the
    # relayout pass must not depend on it (it binds its own NEAREST sampler object).
    import moderngl

    def make(ctx):
        texture = ctx.texture((6, 10), channels, data, dtype=dtype)
        texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        return texture

    texture = pp.run_gl(make)
    try:
        masks = pp.process_resident(GLTensor(texture), (15, 9))
        _assert_reference(masks.read_confidence(), masks.read_category(), tensor, "softmax", (15, 9))
    finally:
        _release(pp, texture)


@pytest.mark.parametrize(("dtype", "channels"), [("float32", None), ("float16", None), ("uint8", (1, 1, 3))])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_confidence_formats(activation, dtype, channels):
    tensor = _tensor((14, 11, 5), 7)
    if activation == "none":
        tensor = tensor / 6 + 0.5
    options = {"confidence_dtype": dtype, "confidence_channels": channels}
    texture_dtype = {"float32": "f4", "float16": "u2", "uint8": "u1"}[dtype]
    with gpu_seg.SegmentationPostprocessor(activation, backend="gl", **options) as pp:
        host = pp.process(tensor, (29, 23))  # checked against the reference by tests/test_gl.py
        buffer = _upload(pp, tensor)
        for source in (tensor, GLTensor(buffer, tensor.shape)):
            masks = pp.process_resident(source, (29, 23))
            assert {t.dtype for t in masks.confidence_textures} == {texture_dtype}
            conf = masks.read_confidence()
            assert conf.dtype == np.dtype(dtype) and conf.shape == host.confidence_masks.shape
            np.testing.assert_array_equal(conf.view(np.uint8), host.confidence_masks.view(np.uint8))
            np.testing.assert_array_equal(masks.read_category(), host.category_mask)
        _release(pp, buffer)


def test_sizes_smaller_than_a_pooled_slot_give_exact_textures(resident_pps):
    pp = resident_pps("sigmoid")
    tensor = _tensor((8, 8, 3), 3)
    pp.process(tensor, (64, 48))  # the pool holds a larger slot of this kind
    for size in [(13, 11), (5, 3), (64, 48), (1, 1), (13, 11)]:
        masks = pp.process_resident(tensor, size)
        assert {t.size for t in masks.confidence_textures} == {size}
        assert masks.category_texture.size == size
        _assert_reference(masks.read_confidence(), masks.read_category(), tensor, "sigmoid", size)


@pytest.mark.parametrize(("shape", "kind"), [((6, 50, 6), "hwc"), ((5, 40, 4), "hwc"), ((7, 30, 2), "hwc")])
@pytest.mark.parametrize("activation", ["none", "softmax"])
def test_buffer_inputs_in_wrapped_layouts(gl_clean, activation, shape, kind):
    """A texture limit of 64 wraps these tensors; their buffers go through the relayout pass."""
    pipeline = gl_clean.pipeline_with_limit(64)
    tensor = _tensor(shape, shape[2])
    buffer = gl_clean.ctx.buffer(tensor.tobytes())
    try:
        frame = make_frame(tensor, activation, (17, 9), confidence=True, category=True)
        images = pipeline.submit_resident(frame, GLSource(kind, buffer, *shape))
        conf = np.stack([np.frombuffer(t.read(), np.float32).reshape(9, 17) for t in images.confidence])
        cat = np.frombuffer(images.category.read(), np.uint8).reshape(9, 17)
        _assert_reference(conf, cat, tensor, activation, (17, 9))
    finally:
        buffer.release()
        pipeline.release()


def test_raw_line_covers_the_buffer_exactly():
    assert raw_line(9, 7, 3, 64) == 21
    assert raw_line(6, 50, 6, 64) == 60  # 1800 values: 30 rows of 60
    with pytest.raises(gpu_seg.InputError) as info:
        raw_line(1, 67, 67, 64)  # 4489 = 67 * 67: no divisor fits
    assert info.value.argument == "tensor"


def test_lifetime_ends_with_the_next_frame_release_trim_and_close():
    tensor = _tensor((6, 5, 2), 1)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        first = pp.process_resident(tensor)
        assert first.valid
        pp.process(tensor)  # any later frame ends it
        assert not first.valid
        for access in (
            lambda m: m.confidence_textures,
            lambda m: m.category_texture,
            lambda m: m.read_category(),
        ):
            with pytest.raises(gpu_seg.ExpiredResultError, match="superseded"):
                access(first)
        second = pp.process_resident(tensor)
        third = pp.process_resident(tensor)
        with pytest.raises(gpu_seg.ExpiredResultError):
            second.read_confidence()
        third.release()
        with pytest.raises(gpu_seg.ExpiredResultError, match="released"):
            _ = third.category_texture
        fourth = pp.process_resident(tensor)
        pp.trim()
        with pytest.raises(gpu_seg.ExpiredResultError, match="trim"):
            fourth.read_confidence()
        for later_frame in (lambda: pp.process_view(tensor).release(), lambda: pp.submit(tensor).result()):
            lent = pp.process_resident(tensor)
            later_frame()  # zero-copy views and frames in flight are later frames too
            with pytest.raises(gpu_seg.ExpiredResultError, match="superseded"):
                lent.read_category()
        fifth = pp.process_resident(tensor)
    with pytest.raises(gpu_seg.ExpiredResultError, match="closed"):
        _ = fifth.confidence_textures


def test_a_rejected_call_runs_no_frame_and_leaves_the_lease():
    """ "Valid until the next frame": a call refused with InputError runs none, for every method
    (process, process_view and submit ended the lease before validating their arguments)."""
    tensor = _tensor((6, 5, 2), 2)
    wrong = np.empty((1, 1), np.float32)  # not the confidence shape
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        lent = pp.process_resident(tensor, (8, 8))
        want = lent.read_category()
        for rejected in (
            lambda: pp.process(tensor.astype(np.int32)),
            lambda: pp.process(tensor, (8, 8), confidence_out=wrong),
            lambda: pp.process_view(tensor, (0, 8)),
            lambda: pp.submit(tensor, (8, 8), category_out=wrong),
            lambda: pp.process_resident(tensor, (8, -1)),
        ):
            with pytest.raises(gpu_seg.InputError):
                rejected()
            assert lent.valid
            np.testing.assert_array_equal(lent.read_category(), want)
        assert pp.stats["frames"] == 1
        pp.process(tensor)
        assert not lent.valid


def test_context_loss_recomputes_numpy_inputs_and_rejects_dead_handles():
    tensor = _tensor((9, 7, 6), 5)
    size = (21, 17)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        buffer = _upload(pp, tensor)
        masks = pp.process_resident(GLTensor(buffer, tensor.shape), size)
        testing.lose_context(pp)  # the driver destroys the context; nobody has noticed yet
        with pytest.raises(gpu_seg.ContextLostError):
            masks.read_confidence()  # the health check after the read finds the loss
        with pytest.raises(gpu_seg.ContextLostError):
            _ = masks.category_texture  # the generation is known dead: never a stale handle
        with pytest.raises(gpu_seg.ContextLostError, match="upload the tensor again"):
            pp.process_resident(GLTensor(buffer, tensor.shape), size)
        again = pp.process_resident(tensor, size)  # a numpy input is computed on a new generation
        assert again.generation == 2 and pp.stats["context_losses"] == 1
        _assert_reference(again.read_confidence(), again.read_category(), tensor, "softmax", size)

        testing.lose_context(pp)  # a loss found by the frame itself: recomputed there
        latest = pp.process_resident(tensor, size)
        assert latest.generation == 3 and pp.stats["context_losses"] == 2
        with pytest.raises(gpu_seg.ContextLostError):
            _ = again.confidence_textures
        _assert_reference(latest.read_confidence(), latest.read_category(), tensor, "softmax", size)


def test_a_lost_generations_texture_kept_from_a_result_is_lost_not_invalid():
    """A lost generation's objects are released on the host side now (they kept its moderngl
    context alive): a result's texture kept past the loss and given back as input raised
    InputError ("was released"), where the documented error is ContextLostError."""
    tensor = _tensor((16, 16, 1), 7)
    with gpu_seg.SegmentationPostprocessor(
        "sigmoid", output_confidence_masks=True, output_category_mask=False, backend="gl"
    ) as pp:
        texture = pp.process_resident(tensor, (16, 16)).confidence_textures[0]
        source = GLTensor(texture)
        testing.lose_context(pp)
        pp.process(tensor, (16, 16))  # the loss is found; a new generation
        with pytest.raises(gpu_seg.ContextLostError, match="upload the tensor again"):
            pp.process_resident(source, (16, 16))
        with pytest.raises(gpu_seg.ContextLostError, match="upload the tensor again"):
            GLTensor(texture)


def test_bad_inputs_name_the_argument(gl_clean):
    tensor = _tensor((4, 3, 2), 2)
    with gpu_seg.SegmentationPostprocessor("none", backend="gl") as pp:
        small = _upload(pp, tensor[:3])
        cases = [
            lambda: GLTensor(small, (4, 3, 2)),  # 72 bytes for a tensor of 96
            lambda: GLTensor(small),  # a buffer needs its shape
            lambda: GLTensor(tensor, (4, 3, 2)),  # not a GL object
            lambda: GLTensor(small, (2, 4, 3, 2)),  # batch 2
            lambda: GLTensor(small, (4, 0, 2)),
        ]
        int_texture = pp.run_gl(lambda ctx: ctx.texture((3, 4), 2, dtype="u1"))
        float_texture = pp.run_gl(lambda ctx: ctx.texture((3, 4), 2, dtype="f4"))
        cases += [
            lambda: GLTensor(int_texture),  # not a float texture
            lambda: GLTensor(float_texture, (4, 3, 3)),  # shape does not match the texture
        ]
        for case in cases:
            with pytest.raises(gpu_seg.InputError) as info:
                case()
            assert info.value.argument == "tensor"
        foreign = gl_clean.ctx.buffer(tensor.tobytes())  # another context's buffer
        released = _upload(pp, tensor)
        _release(pp, released)
        late = GLTensor(_upload(pp, tensor), tensor.shape)
        _release(pp, late.source)  # released after the GLTensor was made
        for source in (
            lambda: GLTensor(foreign, tensor.shape),
            lambda: GLTensor(released, tensor.shape),
            lambda: late,
        ):
            with pytest.raises(gpu_seg.InputError) as info:
                pp.process_resident(source())
            assert info.value.argument == "tensor"
        with pytest.raises(gpu_seg.InputError) as info:
            pp.process_resident(GLTensor(float_texture), (0, 3))
        assert info.value.argument == "output_size"
        foreign.release()
        _release(pp, small, int_texture, float_texture)
        assert pp.run_gl(lambda ctx: ctx.error) == "GL_NO_ERROR"


def test_no_gl_means_a_clear_error():
    tensor = _tensor((4, 3, 2), 3)
    with gpu_seg.SegmentationPostprocessor("none", backend="cpu") as pp:
        with pytest.raises(gpu_seg.GLUnavailableError):
            pp.process_resident(tensor)
    with gpu_seg.SegmentationPostprocessor("none", backend="auto") as pp:
        testing.fail_next_context_creations(pp, 1)
        testing.lose_context(pp)
        assert pp.process(tensor).backend == "cpu"  # the rebuild failed: the CPU fallback
        with pytest.raises(gpu_seg.GLUnavailableError, match="GPU-resident results need GL"):
            pp.process_resident(tensor)


def test_no_gl_object_growth_over_many_frames():
    tensor = _tensor((9, 7, 3), 9)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        buffer = _upload(pp, tensor)
        texture = pp.run_gl(lambda ctx: ctx.texture((7, 9), 3, tensor.tobytes(), dtype="f4"))

        def frames(n):
            for i in range(n):
                size = [(32, 24), (13, 11)][i % 2]
                source = [tensor, GLTensor(buffer, tensor.shape), GLTensor(texture)][i % 3]
                pp.process_resident(source, size)
                pp.process(tensor, size)

        frames(6)
        objects, builds = pp.live_gl_objects(), pp.stats["program_builds"]
        frames(60)
        assert pp.live_gl_objects() == objects
        assert pp.stats["program_builds"] == builds
        _release(pp, buffer, texture)


def test_gpu_time_covers_resident_frames():
    tensor = _tensor((9, 7, 6), 4)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", time_gpu=True) as pp:
        assert pp.stats["last_gpu_ms"] is None
        pp.process_resident(tensor, (64, 48))  # (llvmpipe: the first query of a context is garbage)
        pp.process_resident(tensor, (64, 48))
        first = pp.stats["last_gpu_ms"]
        assert isinstance(first, float) and first > 0


def test_attached_application_uses_the_textures_and_its_own_buffers(glfw_windows):  # noqa: F811
    import moderngl

    open_window, _ = glfw_windows
    open_window()
    app = moderngl.create_context(require=330)
    tensor = _tensor((9, 7, 3), 11)
    size = (13, 11)
    buffer = app.buffer(tensor.tobytes())
    for context in (app, "current"):  # "current": gpu_seg wraps the context itself (another wrapper)
        with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context=context) as pp:
            masks = pp.process_resident(GLTensor(buffer, tensor.shape), size)
            # The application reads (or draws) the textures in its own context, on its thread.
            conf = np.stack(
                [np.frombuffer(t.read(), np.float32).reshape(11, 13) for t in masks.confidence_textures]
            )
            cat = np.frombuffer(masks.category_texture.read(), np.uint8).reshape(11, 13)
            _assert_reference(conf, cat, tensor, "softmax", size)
            assert app.error == "GL_NO_ERROR"
    buffer.release()


def test_a_buffer_made_smaller_after_its_gltensor_is_refused_naming_the_tensor():
    tensor = _tensor((8, 8, 4), 12)
    size = (16, 16)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
        source = GLTensor(buffer, tensor.shape)
        pp.run_gl(lambda ctx: buffer.orphan(16))  # re-specified smaller (moderngl's documented way)
        with pytest.raises(gpu_seg.InputError, match="holds 16 bytes") as caught:
            pp.process_resident(source, size)
        assert caught.value.argument == "tensor"
        with pytest.raises(AttributeError):
            source.shape = (2, 2, 1)  # the shape checked against the object cannot change
        pp.run_gl(lambda ctx: buffer.orphan(tensor.nbytes))
        pp.run_gl(lambda ctx: buffer.write(tensor.tobytes()))
        masks = pp.process_resident(source, size)
        _assert_reference(masks.read_confidence(), masks.read_category(), tensor, "softmax", size)
        pp.run_gl(lambda ctx: buffer.release())


@pytest.mark.parametrize("gl_passes", ["fragment", "compute"])
@pytest.mark.parametrize("which", ["confidence", "category"])
def test_a_lent_texture_the_application_released_is_made_again(gl_passes, which, caplog):
    """Lent textures must never be released (documented); if one is, the next frames still run
    exactly on new textures and the misuse is logged."""
    tensor = _tensor((8, 8, 3), 13)
    size = (16, 16)
    options = {"readback": "mapped"} if gl_passes == "compute" else {}
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", gl_passes=gl_passes, **options) as pp:
        masks = pp.process_resident(tensor, size)
        texture = masks.confidence_textures[0] if which == "confidence" else masks.category_texture
        pp.run_gl(lambda ctx: texture.release())
        with caplog.at_level("WARNING", logger="gpu_seg"):
            again = pp.process_resident(tensor, size)
            _assert_reference(again.read_confidence(), again.read_category(), tensor, "softmax", size)
            result = pp.process(tensor, size)
            _assert_reference(result.confidence_masks, result.category_mask, tensor, "softmax", size)
        assert "released" in caplog.text
        objects = pp.live_gl_objects()
        for _ in range(3):
            pp.process_resident(tensor, size)
        assert pp.live_gl_objects() == objects  # made again once, not per frame


def test_an_input_texture_with_a_swizzle_is_refused_naming_the_tensor():
    tensor = _tensor((8, 8, 3), 14)
    size = (16, 16)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        texture = pp.run_gl(lambda ctx: ctx.texture((8, 8), 3, tensor.tobytes(), dtype="f4"))
        source = GLTensor(texture)

        def swizzle(value):
            texture.swizzle = value

        pp.run_gl(lambda ctx: swizzle("BGRA"))
        with pytest.raises(gpu_seg.InputError, match="swizzle") as caught:
            pp.process_resident(source, size)
        assert caught.value.argument == "tensor"
        pp.run_gl(lambda ctx: swizzle("RGB1"))  # the fourth component is not read: fine
        masks = pp.process_resident(source, size)
        _assert_reference(masks.read_confidence(), masks.read_category(), tensor, "softmax", size)
        pp.run_gl(lambda ctx: texture.release())
