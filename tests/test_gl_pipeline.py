"""The GL pipeline's structure on a real EGL context: slots built all at once, bounded caches,
trim, output-size churn, and the data-path strategies (direct / mapped readback and upload)."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import time

import moderngl
import numpy as np
import pytest

import gpu_seg
from gpu_seg import reference_postprocess, testing
from gpu_seg.gl.pipeline import GLPipeline
from gpu_seg.gl.plan import GLLimits
from gpu_seg.gl.programs import ProgramCache, ProgramDefinition
from gpu_seg.inputs import make_frame

from .process_memory import check_rss_growth


def _pipeline(gl, ctx=None, passes: str = "auto", **cache_options) -> GLPipeline:
    programs = ProgramCache(gl.ctx, 1, gl.glsl, lambda: None, **cache_options)
    return GLPipeline(ctx or gl.ctx, programs, passes=passes)


@pytest.fixture
def pipeline(gl_clean):
    pipeline = _pipeline(gl_clean)
    yield pipeline
    pipeline.release()


def _run(pipeline, tensor, activation, size, *, confidence=True, category=True, **options):
    frame = make_frame(tensor, activation, size, confidence=confidence, category=category, **options)
    conf, cat = frame.allocate_confidence(), frame.allocate_category()
    pipeline.process(frame, conf, cat)
    return conf, cat


def _assert_exact(tensor, activation, size, conf, cat, **options):
    """Equal to the numpy reference: category identical, float32 confidence within float rounding."""
    want = reference_postprocess(tensor, activation, size, **options)
    if cat is not None:
        np.testing.assert_array_equal(cat, want.category_mask)
    if conf is not None:
        tol = 0.0 if activation == "none" else 2e-6
        np.testing.assert_allclose(conf, want.confidence_masks, rtol=tol, atol=tol)


def _tensor(seed, shape, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _released(obj) -> bool:
    return type(obj.mglo).__name__ == "InvalidObject"


# ----------------------------------------------------------------------------- data-path strategies
STRATEGY_CASES = [
    ((6, 5, 4), (9, 7), "softmax", {}),
    ((9, 40, 3), (53, 17), "sigmoid", {}),  # padded layout (3 channels in 4 lanes)
    ((14, 11, 5), (29, 23), "softmax", {"confidence_format": "float16", "confidence_channels": (2, 0)}),
    ((20, 16, 21), (33, 41), "softmax", {"confidence_format": "uint8"}),  # category width not a multiple of 4
    ((12, 10, 1), (31, 30), "sigmoid", {}),
]


@pytest.mark.parametrize(("shape", "size", "activation", "options"), STRATEGY_CASES)
def test_readback_and_upload_strategies_give_identical_bytes(pipeline, shape, size, activation, options):
    if "mapped" not in _available(pipeline):
        pytest.skip(f"no GL_ARB_buffer_storage on {pipeline.renderer}")
    tensor = _tensor(sum(shape), shape)
    results = {}
    for readback in ("direct", "mapped"):
        for upload in ("direct", "mapped"):
            pipeline.readback, pipeline.upload = readback, upload
            results[readback, upload] = _run(pipeline, tensor, activation, size, **options)
    conf, cat = results["direct", "direct"]
    for key, (other_conf, other_cat) in results.items():
        np.testing.assert_array_equal(other_cat, cat, err_msg=str(key))
        assert other_conf.tobytes() == conf.tobytes(), key
    if "confidence_format" not in options:
        _assert_exact(tensor, activation, size, conf, cat, **options)
    else:
        np.testing.assert_array_equal(cat, reference_postprocess(tensor, activation, size).category_mask)


@pytest.mark.parametrize(("shape", "size", "activation", "options"), STRATEGY_CASES[:4])
def test_early_flushes_change_no_byte(pipeline, shape, size, activation, options):
    """``early_flush`` (glFlush after the upload and the category pass) only moves when the GPU
    starts: the same bytes, with every readback."""
    tensor = _tensor(sum(shape) + 2, shape)
    want = _run(pipeline, tensor, activation, size, **options)
    pipeline.early_flush = True  # a pipeline per test
    for readback in _available(pipeline):
        pipeline.readback = readback
        got = _run(pipeline, tensor, activation, size, **options)
        assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()


@pytest.mark.parametrize("shape", [(128, 128, 16), (130, 120, 21), (512, 512, 1), (70, 80, 3)])
def test_parallel_upload_gives_the_same_bytes(pipeline, monkeypatch, shape):
    """``parallel_upload``: tensors of 1 MB or more are copied into the mapped upload buffer in row
    bands over threads (forced here with 8 CPUs reported), padded layouts included; smaller ones in
    one copy. The same bytes as the direct upload."""
    if "mapped" not in _available(pipeline):
        pytest.skip(f"no GL_ARB_buffer_storage on {pipeline.renderer}")
    from gpu_seg.gl import readback

    monkeypatch.setattr(readback.os, "cpu_count", lambda: 8)
    tensor = _tensor(sum(shape), shape)
    pipeline.upload = "direct"
    want = _run(pipeline, tensor, "softmax", (61, 37))
    pipeline.upload, pipeline.parallel_upload = "mapped", True
    submitted = []
    pool_submit = readback._pool(4).submit
    monkeypatch.setattr(readback._pool(4), "submit", lambda *a: (submitted.append(a), pool_submit(*a))[1])
    for _ in range(2):  # the padding written once per layout, then reused
        got = _run(pipeline, tensor, "softmax", (61, 37))
        assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()
    assert (len(submitted) > 2) is (tensor.nbytes >= 1 << 20)  # banded over threads only when large


def test_mapped_upload_pads_exactly_across_layout_changes(pipeline):
    """Padded, unpadded, other padded, first again: exact every time."""
    if "mapped" not in _available(pipeline):
        pytest.skip(f"no GL_ARB_buffer_storage on {pipeline.renderer}")
    pipeline.readback, pipeline.upload = "direct", "mapped"
    for shape in ((9, 40, 3), (12, 10, 4), (7, 9, 6), (9, 40, 3)):
        tensor = _tensor(sum(shape) + 1, shape)
        conf, cat = _run(pipeline, tensor, "softmax", (23, 19))
        _assert_exact(tensor, "softmax", (23, 19), conf, cat)
    pipeline.upload = "direct"


def _available(pipeline) -> tuple[str, ...]:
    return ("direct", "mapped") if pipeline._gl is not None else ("direct",)


def test_strategies_are_chosen_from_the_renderer_and_checked(pipeline):
    software = "llvmpipe" in pipeline.renderer.lower()
    if software:  # measured: direct reads are the fastest on llvmpipe, and the shortcut pays there
        assert (pipeline.readback, pipeline.upload, pipeline.category_shortcut) == ("direct", "direct", True)
        assert pipeline.collect_needs_gl
    pipeline.readback = "bogus"
    with pytest.raises(gpu_seg.InputError, match="readback"):
        _run(pipeline, _tensor(1, (4, 4, 2)), "none", (4, 4))
    pipeline.readback = "direct"


def test_mapped_collect_is_a_host_copy_after_wait(pipeline, gl_clean):
    """With "mapped", collect() makes no GL call: it works with no context current at all."""
    if "mapped" not in _available(pipeline):
        pytest.skip(f"no GL_ARB_buffer_storage on {pipeline.renderer}")
    pipeline.readback = "mapped"
    tensor = _tensor(2, (16, 12, 6))
    frame = make_frame(tensor, "softmax", (37, 29), confidence=True, category=True)
    conf, cat = frame.allocate_confidence(), frame.allocate_category()
    pipeline.submit(frame)
    pipeline.wait()
    assert not pipeline.collect_needs_gl
    gl_clean.egl_context.release_current()
    try:
        pipeline.collect(conf, cat)
    finally:
        gl_clean.egl_context.make_current()
    _assert_exact(tensor, "softmax", (37, 29), conf, cat)
    with pytest.raises(RuntimeError, match="without a started frame"):
        pipeline.collect(conf, cat)


# ----------------------------------------------------------------------------- output sizes
@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_a_larger_slot_serves_smaller_sizes_exactly(pipeline, readback):
    """A size that fits a pooled slot draws into its viewport and reads that viewport back."""
    if readback not in _available(pipeline):
        pytest.skip(f"no GL_ARB_buffer_storage on {pipeline.renderer}")
    pipeline.readback = readback
    tensor = _tensor(3, (18, 22, 6))
    _run(pipeline, tensor, "softmax", (101, 77))
    created = pipeline.objects_created
    for size in ((61, 47), (101, 3), (5, 77), (62, 47), (61, 47)):
        conf, cat = _run(pipeline, tensor, "softmax", size)
        _assert_exact(tensor, "softmax", size, conf, cat)
    assert pipeline.objects_created == created  # no new GL objects: the (101, 77) slot served them all
    for _ in range(3):  # a size that stays gets a slot of its own (whole-texture reads)
        conf, cat = _run(pipeline, tensor, "softmax", (61, 47))
        _assert_exact(tensor, "softmax", (61, 47), conf, cat)
    assert pipeline.objects_created > created
    assert any(slot.capacity == (61, 47) for slot in pipeline._outputs.slots.values())


def _rss_mib() -> float:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_output_size_churn_allocates_nothing_and_memory_stays_flat(pipeline):
    """A window resized every frame costs what one frame at its largest size costs: no GL object
    is created per frame and the process memory stays within 8 MiB of that (documented bound: one
    output slot of the largest size seen, rounded up to 32 pixels, per output kind; gpu_seg.gl.slots).
    Before: a pool of 4 slots of recent sizes, re-made every frame (+3 slots, ~30 MiB here)."""
    rng = np.random.default_rng(15)
    tensor = _tensor(15, (96, 96, 6))
    buffers = (np.empty(6 * 800 * 450, np.float32), np.empty(800 * 450, np.uint8))

    def frame_at(width, height):
        frame = make_frame(tensor, "softmax", (width, height), confidence=True, category=True)
        conf = buffers[0][: 6 * width * height].reshape(6, height, width)
        cat = buffers[1][: width * height].reshape(height, width)
        pipeline.process(frame, conf, cat)
        return conf, cat

    for _ in range(5):  # the largest window size
        frame_at(800, 450)
    created, rss = pipeline.objects_created, _rss_mib()
    slots = pipeline.live_objects() - pipeline.programs.live_objects()
    for index in range(250):
        size = (int(rng.integers(200, 801)), int(rng.integers(150, 451)))
        conf, cat = frame_at(*size)
        if index % 64 == 63:
            _assert_exact(tensor, "softmax", size, conf, cat)
    assert pipeline.objects_created == created
    assert pipeline.live_objects() - pipeline.programs.live_objects() == slots
    assert len(pipeline.programs) <= 12  # the category pass has a few variants by scale (COLUMNS)
    growth = _rss_mib() - rss
    check_rss_growth(growth * 1024, 8 * 1024, "churn, above one frame at the largest size")


def test_growing_sizes_keep_one_covering_slot(pipeline):
    """Sizes that outgrow every slot get one slot covering them all; the covered slots are released."""
    tensor = _tensor(16, (10, 12, 3))
    for size in ((40, 30), (60, 20), (30, 70), (90, 10), (20, 20), (95, 75)):
        conf, cat = _run(pipeline, tensor, "sigmoid", size)
        _assert_exact(tensor, "sigmoid", size, conf, cat)
        capacities = [slot.capacity for slot in pipeline._outputs.slots.values()]
        assert len(capacities) == 1 and capacities[0][0] >= size[0] and capacities[0][1] >= size[1]
    assert capacities == [(96, 96)]  # the largest width and height seen, rounded up to 32


def test_an_output_slot_unused_for_a_while_is_released(pipeline):
    from gpu_seg.gl.slots import OutputPool

    first, other = _tensor(17, (6, 5, 3)), _tensor(18, (5, 6, 2))
    _run(pipeline, first, "none", (9, 8))
    layouts = {slot.kind.layout for slot in pipeline._outputs.slots.values()}
    for _ in range(OutputPool.IDLE_FRAMES + 2):
        _run(pipeline, other, "none", (9, 8), category=False)
    assert not layouts & {slot.kind.layout for slot in pipeline._outputs.slots.values()}
    conf, cat = _run(pipeline, first, "none", (9, 8))  # and it comes back when needed
    _assert_exact(first, "none", (9, 8), conf, cat)


# ----------------------------------------------------------------------------- slots built in one step
def test_a_gl_error_while_building_a_slot_leaves_nothing_half_built(gl_clean):
    """A real GL error in the middle of a slot: the textures made before it are released, and the
    same frame again fails the same way (before: TypeError/AttributeError on the half-built slot)."""
    pipeline = _pipeline(gl_clean, passes="fragment")  # the fragment slot's textures and framebuffers
    try:
        real_limit = pipeline.limits.max_texture_size
        # the pipeline believes textures may be far larger than the driver allows: the rows texture
        # of this tensor (H x 6 groups rows) is refused after the confidence textures were made
        pipeline.limits = GLLimits(1 << 20, pipeline.limits.max_outputs_per_pass)
        tall = np.zeros((real_limit // 6 + 1, 2, 24), np.float32)
        for _ in range(2):
            with pytest.raises(moderngl.Error, match="GL_INVALID_VALUE"):
                _run(pipeline, tall, "none", (4, 4), category=False)
            assert all(slot.confidence is None for slot in pipeline._outputs.slots.values())
            assert gl_clean.ctx.error == "GL_NO_ERROR"
        live = pipeline.live_objects()
        tensor = _tensor(4, (7, 9, 5))
        conf, cat = _run(pipeline, tensor, "softmax", (13, 11))
        _assert_exact(tensor, "softmax", (13, 11), conf, cat)
        assert pipeline.live_objects() > live
    finally:
        pipeline.release()


class _FailingFramebuffers:
    """The real context, except that its ``fail_at``-th framebuffer creation raises once, as a
    ``GL_OUT_OF_MEMORY`` would; records every texture and framebuffer made through it."""

    def __init__(self, ctx: moderngl.Context, fail_at: int) -> None:
        self._ctx = ctx
        self._left = fail_at
        self.created: list = []

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)

    def framebuffer(self, *args, **kwargs):
        self._left -= 1
        if self._left == 0:
            raise moderngl.Error("injected failure: GL_OUT_OF_MEMORY")
        self.created.append(self._ctx.framebuffer(*args, **kwargs))
        return self.created[-1]

    def texture(self, *args, **kwargs):
        self.created.append(self._ctx.texture(*args, **kwargs))
        return self.created[-1]


@pytest.mark.parametrize("fail_at", [1, 2, 3, 5, 7])
def test_next_frame_works_after_a_failure_in_the_middle_of_a_slot(gl_clean, fail_at):
    failing = _FailingFramebuffers(gl_clean.ctx, fail_at)
    pipeline = _pipeline(gl_clean, ctx=failing, passes="fragment")  # fragment slots have framebuffers
    try:
        tensor = _tensor(5, (12, 10, 21))
        with pytest.raises(moderngl.Error, match="injected"):
            _run(pipeline, tensor, "softmax", (41, 35))
        held = {id(obj) for obj in pipeline._tensors.objects() + pipeline._outputs.objects()}
        leaked = [obj for obj in failing.created if id(obj) not in held and not _released(obj)]
        assert not leaked
        conf, cat = _run(pipeline, tensor, "softmax", (41, 35))
        _assert_exact(tensor, "softmax", (41, 35), conf, cat)
    finally:
        pipeline.release()


# ----------------------------------------------------------------------------- bounded caches, trim
def test_programs_and_vertex_arrays_are_bounded_across_tensor_shapes(gl_clean):
    pipeline = _pipeline(gl_clean, capacity=12)
    pipeline.category_shortcut = True  # the rectangles' vertex arrays are made per program
    pipeline.SHORTCUT_MIN_WORK, pipeline.SHORTCUT_MAX_UNSURE = 0, 1.0
    try:
        counts = []
        for i in range(16):
            tensor = _tensor(i, (6 + i, 7, 3))
            conf, cat = _run(pipeline, tensor, "softmax", (23, 19))
            _assert_exact(tensor, "softmax", (23, 19), conf, cat)
            assert len(pipeline.programs) <= 12
            counts.append(pipeline.live_objects())
            for slot in pipeline._outputs.slots.values():
                vao = slot.category.rects_vao if slot.category else None
                assert vao is None or not _released(vao.program)  # no vertex array of an evicted program
        assert pipeline.programs.counters.program_evictions > 0
        assert len(set(counts[-8:])) == 1, counts  # flat once the pools and the cache are full
    finally:
        pipeline.release()


def test_trim_releases_everything_and_the_next_frame_is_exact(pipeline, gl_clean):
    tensor = _tensor(6, (16, 12, 6))
    for readback in _available(pipeline):
        pipeline.readback = pipeline.upload = readback
        _run(pipeline, tensor, "softmax", (33, 27))
        assert pipeline.live_objects() > 0
        pipeline.trim()
        assert pipeline.live_objects() == 0
        assert len(pipeline.programs) == 0
        assert gl_clean.ctx.error == "GL_NO_ERROR"
        conf, cat = _run(pipeline, tensor, "softmax", (33, 27))
        _assert_exact(tensor, "softmax", (33, 27), conf, cat)


@pytest.mark.parametrize("value", ["1", "yes", "0", "false", ""])
def test_shader_errors_are_logged_not_printed(gl_clean, monkeypatch, capsys, caplog, value):
    """The source goes to the log where ``GPU_SEG_PRINT_GLSL_ON_ERROR`` is on ("0" was on too)."""
    monkeypatch.setenv("GPU_SEG_PRINT_GLSL_ON_ERROR", value)
    cache = ProgramCache(gl_clean.ctx, 98, gl_clean.glsl, lambda: None)
    bad = ProgramDefinition.of(
        "fullscreen.vert.glsl", "activate.frag.glsl", ACTIVATION=1, TENSOR_W="broken", TENSOR_H=1,
        CHANNELS=1, LANES=1, GROUPS=1, LINE=1, WRAPPED=False,
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="gpu_seg"), pytest.raises(gpu_seg.ShaderBuildError):
        cache.get(bad)
    assert capsys.readouterr().out == ""
    assert any("broken" in record.getMessage() for record in caplog.records)
    sources = [record for record in caplog.records if record.getMessage().startswith("source of")]
    assert bool(sources) == (value in ("1", "yes"))


def test_large_copies_out_of_the_mapping_are_split_over_threads(monkeypatch):
    from gpu_seg.gl import readback

    monkeypatch.setattr(readback, "PARALLEL_COPY_BYTES", 1)
    monkeypatch.setattr(readback.os, "cpu_count", lambda: 8)
    rng = np.random.default_rng(7)
    planes = rng.standard_normal((3, 301, 97)).astype(np.float32)
    packed = rng.integers(0, 255, (301, 100), np.uint8)  # 4-pixel rows, 97 columns wanted
    conf, cat = np.empty_like(planes), np.empty((301, 97), np.uint8)
    readback.copy_rows([(conf[i], planes[i]) for i in range(3)] + [(cat, packed[:, :97])])
    np.testing.assert_array_equal(conf, planes)
    np.testing.assert_array_equal(cat, packed[:, :97])


def _timed_frames(pp, frame, count):
    """(wall ms, stats["last_gpu_ms"]) of ``count`` frames."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        frame()
        times.append(((time.perf_counter() - started) * 1e3, pp.stats["last_gpu_ms"]))
    return times


def test_gpu_time_is_never_longer_than_the_frame():
    """A GPU time the frame cannot have taken is not reported (None): llvmpipe answers the first
    timer query of each context with garbage (2**32 - 1 ns through moderngl's 32-bit read, about
    15 hours through a 64-bit one); it was reported as 4294.97 ms."""
    tensor = (np.random.default_rng(6).standard_normal((16, 16, 3)) * 3).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", time_gpu=True) as pp:
        times = _timed_frames(pp, lambda: pp.process(tensor, (64, 48)), 3)
        testing.lose_context(pp)
        times += _timed_frames(pp, lambda: pp.process(tensor, (64, 48)), 3)  # a new context's queries
        times += _timed_frames(pp, lambda: pp.process_resident(tensor, (64, 48)).release(), 2)
        assert pp.stats["context_losses"] == 1
    for wall_ms, gpu_ms in times:
        assert gpu_ms is None or 0 < gpu_ms <= wall_ms, times
    assert sum(gpu_ms is not None for _, gpu_ms in times) >= 5, times  # the later frames of each context


def test_gpu_time_of_a_frame_is_measured_when_asked():
    tensor = (np.random.default_rng(5).standard_normal((32, 32, 6)) * 3).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", time_gpu=True) as pp:
        result = pp.process(tensor, (320, 240))
        want = gpu_seg.reference_postprocess(tensor, "softmax", (320, 240))
        np.testing.assert_array_equal(result.category_mask, want.category_mask)
        objects = pp.live_gl_objects()
        pp.process(tensor, (320, 240))
        assert pp.stats["last_gpu_ms"] > 0 and pp.live_gl_objects() == objects  # one query, reused
        pp.trim()
        assert pp.live_gl_objects() == 2  # the context and the query (moderngl cannot delete one)
        pp.process(tensor, (320, 240))
        assert pp.live_gl_objects() == objects
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        pp.process(tensor, (320, 240))
        assert pp.stats["last_gpu_ms"] is None
