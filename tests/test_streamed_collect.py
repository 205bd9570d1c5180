"""Streamed collect (``GLPipeline.stream_collect`` / ``stream_into``): a frame into fresh arrays is
fenced every few MB and each part is copied as soon as it is in host memory. On a real EGL context
(llvmpipe), with the chunk size lowered so that small frames stream in several parts: the bytes
equal an ordinary collect's for every form of the passes and every output format, every partial
fence is consumed, and a context destroyed under a streamed frame has it recomputed, never returned.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_seg import reference_postprocess
from gpu_seg.gl import readback as readback_module
from gpu_seg.gl.pipeline import GLPipeline
from gpu_seg.inputs import make_frame


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(readback_module, "STREAM_CHUNK_BYTES", 1024)


@pytest.fixture
def pipelines(new_pipeline):
    def make(passes: str) -> GLPipeline:
        pipeline = new_pipeline(passes)
        if pipeline._gl is None:
            pytest.skip("no GL_ARB_buffer_storage")
        pipeline.readback = "mapped"
        pipeline.category_shortcut = False
        return pipeline

    return make


def _tensor(seed, shape):
    tensor = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)
    tensor.reshape(-1)[::17] = np.nan
    return tensor


@pytest.mark.parametrize("passes", ["fragment", "compute"])
@pytest.mark.parametrize("fmt", ["float32", "float16", "uint8"])
@pytest.mark.parametrize(("confidence", "category"), [(True, True), (True, False), (False, True)])
def test_streamed_frames_equal_collected_ones(pipelines, small_chunks, passes, fmt, confidence, category):
    pipeline = pipelines(passes)
    for shape, size in (((9, 7, 6), (41, 23)), ((5, 5, 21), (19, 30)), ((8, 8, 1), (3, 2))):
        tensor = _tensor(sum(shape), shape)
        options = {"confidence": confidence, "category": category}
        frame = make_frame(tensor, "softmax", size, confidence_format=fmt, **options)
        want = frame.allocate_confidence(), frame.allocate_category()
        pipeline.process(frame, *want)
        got = frame.allocate_confidence(), frame.allocate_category()
        ticket = pipeline.submit(frame, stream=True)
        slot = pipeline._readback._slots[ticket]
        confidence_bytes = 0 if want[0] is None else want[0].nbytes
        if confidence_bytes >= 3 * 1024:
            assert len(slot.parts) >= 2, (shape, size)  # it did stream
        pipeline.stream_into(*got, ticket)
        assert not slot.parts and not slot.started  # every partial fence consumed, the slot free
        for a, b in zip(got, want, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.tobytes() == b.tobytes()


def test_stream_into_checks_its_arguments(pipelines):
    pipeline = pipelines("fragment")
    frame = make_frame(_tensor(1, (6, 6, 3)), "softmax", (9, 9), confidence=True, category=True)
    ticket = pipeline.submit(frame, stream=True)
    with pytest.raises(ValueError, match="confidence_out"):
        pipeline.stream_into(np.empty((2, 9, 9), np.float32), frame.allocate_category(), ticket)
    pipeline.stream_into(frame.allocate_confidence(), frame.allocate_category(), ticket)
    pipeline.readback = "direct"
    pipeline.submit(frame)
    with pytest.raises(RuntimeError, match="mapped readback"):
        pipeline.stream_into(frame.allocate_confidence(), frame.allocate_category())


def _stream(pp, on: bool = True):
    pp._supervisor.generation.pipeline.stream_collect = on


@pytest.mark.parametrize("passes", ["fragment", "compute"])
def test_processor_frames_stream_into_fresh_arrays_only(new_processor, small_chunks, passes):
    pp = new_processor(backend="gl", readback="mapped", gl_passes=passes)
    tensor = _tensor(3, (12, 10, 5))
    pp.process(tensor, (37, 29))
    if pp.stats["gl_passes"] != passes:
        pytest.skip(f"no {passes} passes here")
    _stream(pp)
    pipeline = pp._supervisor.generation.pipeline
    calls = []
    original = pipeline.stream_into
    pipeline.stream_into = lambda *a, **k: (calls.append(a), original(*a, **k))[1]
    want = reference_postprocess(tensor, "softmax", (37, 29))
    result = pp.process(tensor, (37, 29))
    assert len(calls) == 1
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)
    conf, cat = np.empty_like(result.confidence_masks), np.empty_like(result.category_mask)
    pp.process(tensor, (37, 29), confidence_out=conf, category_out=cat)  # the caller's arrays: not streamed
    assert len(calls) == 1
    assert conf.tobytes() == result.confidence_masks.tobytes()


def test_a_context_destroyed_under_a_streamed_frame_recomputes_it(new_processor, small_chunks):
    """A real eglDestroyContext between the submission and the streamed copies: the fence waits fail,
    the frame's arrays are dropped, the loss is handled and the frame recomputed on a new context."""
    from gpu_seg.gl import egl

    events = []
    pp = new_processor(backend="auto", readback="mapped", on_event=events.append)
    tensor = _tensor(5, (12, 10, 5))
    pp.process(tensor, (37, 29))
    _stream(pp)
    session = pp._supervisor.generation.session
    pipeline = pp._supervisor.generation.pipeline
    given = []
    original = pipeline.stream_into

    def destroyed_first(confidence, category, ticket=None):
        given.append(confidence)
        session.egl_context.release_current()  # on the GL thread: the context is current here
        egl.library().eglDestroyContext(session.egl_context.display.handle, session.egl_context.handle)
        return original(confidence, category, ticket)

    pipeline.stream_into = destroyed_first
    result = pp.process(tensor, (37, 29))
    assert [e.kind.value for e in events] == ["context_lost", "rebuilt"]
    assert result.backend == "gl" and given and result.confidence_masks is not given[0]
    want = reference_postprocess(tensor, "softmax", (37, 29))
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)
