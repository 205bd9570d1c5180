"""Owned frames as writeable views of their readback buffer (``GLPipeline.owned_views``, a candidate
default, off until measured on a GPU): on a real EGL context (llvmpipe, mapped readback) the
results equal the reference, are writeable and C-contiguous, are never overwritten while held
(more held results than buffers: later frames are copied, never refused), survive a real context
loss and ``close()``, and give their buffer back once dropped.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from gpu_seg import reference_postprocess
from gpu_seg.testing import lose_context

GL_BUFFER_ACCESS_FLAGS = 0x911F  # glGetBufferParameteriv: the mapping access of a buffer's storage


def _tensor(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((12, 10, 4)) * 3).astype(np.float32)


def _check(result, tensor, size) -> None:
    want = reference_postprocess(tensor, "softmax", size)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


def _is_view(array: np.ndarray) -> bool:
    return not array.flags.owndata


@pytest.fixture
def owned_views(new_processor):
    def make(**options):
        pp = new_processor(backend="gl", readback="mapped", **options)
        pp.process(_tensor(0), (40, 32))
        pipeline = pp._supervisor.generation.pipeline
        if not pipeline.lends:
            pytest.skip("no GL_ARB_buffer_storage: no mapped readback")
        pipeline.owned_views = True
        return pp

    return make


@pytest.mark.parametrize("size", [(40, 32), (37, 29)], ids=["width 4n", "padded rows"])
def test_owned_frames_are_writeable_views_equal_to_the_reference(owned_views, size):
    pp = owned_views()
    tensor = _tensor(1)
    result = pp.process(tensor, size)
    _check(result, tensor, size)
    assert _is_view(result.confidence_masks)  # the candidate ran: no copy of the masks
    assert _is_view(result.category_mask) == (size[0] % 4 == 0)  # padded rows: copied out
    for array in (result.confidence_masks, result.category_mask):
        assert array.flags.writeable and array.flags.c_contiguous
    result.confidence_masks[...] = 0.5
    result.category_mask[...] = 7


def test_held_results_are_never_overwritten_and_a_full_ring_copies(owned_views):
    pp = owned_views()
    size = (40, 32)
    held = []
    for seed in range(1, 9):  # more held results than the ring has buffers
        tensor = _tensor(seed)
        held.append((tensor, pp.process(tensor, size)))
    assert any(_is_view(r.confidence_masks) for _, r in held)
    assert any(not _is_view(r.confidence_masks) for _, r in held)  # the ring was full: copied
    scribbled = held[0][1]
    scribbled.confidence_masks[...] = -3.0  # the caller writes into its own result
    for seed in range(20, 24):
        tensor = _tensor(seed)
        _check(pp.process(tensor, size), tensor, size)
    assert (scribbled.confidence_masks == -3.0).all()
    for tensor, result in held[1:]:
        _check(result, tensor, size)


def test_dropped_results_give_their_buffer_back(owned_views):
    pp = owned_views()
    pipeline = pp._supervisor.generation.pipeline
    for seed in range(1, 12):  # dropped each time: the ring never fills
        tensor = _tensor(seed)
        result = pp.process(tensor, (40, 32))
        assert _is_view(result.confidence_masks)
        _check(result, tensor, (40, 32))
        del result
    gc.collect()
    assert pp.run_gl(lambda ctx: pipeline.lent_views()) == 0


def test_results_held_across_a_real_context_loss_and_close_stay_valid(owned_views):
    pp = owned_views()
    size = (40, 32)
    tensor = _tensor(1)
    result = pp.process(tensor, size)
    assert _is_view(result.confidence_masks)
    lose_context(pp)  # eglDestroyContext: the keeper context keeps the buffer and its mapping
    rebuilt_tensor = _tensor(2)
    rebuilt = pp.process(rebuilt_tensor, size)  # detects the loss, rebuilds, recomputes (copied)
    assert pp.stats["context_losses"] == 1
    pp._supervisor.generation.pipeline.owned_views = True  # a candidate: set per pipeline
    later_tensor = _tensor(3)
    later = pp.process(later_tensor, size)
    assert _is_view(later.confidence_masks)  # a view of the new generation's buffer
    for held, held_tensor in ((result, tensor), (rebuilt, rebuilt_tensor), (later, later_tensor)):
        _check(held, held_tensor, size)
    pp.close()
    for held, held_tensor in ((result, tensor), (rebuilt, rebuilt_tensor), (later, later_tensor)):
        _check(held, held_tensor, size)


def test_one_array_of_a_result_holds_its_buffer(owned_views):
    pp = owned_views()
    size = (40, 32)
    tensor = _tensor(1)
    confidence = pp.process(tensor, size).confidence_masks  # the result and its category dropped
    category = pp.process(_tensor(2), size).category_mask  # and another kept by its category only
    assert _is_view(confidence) and _is_view(category)
    for seed in range(3, 12):
        pp.process(_tensor(seed), size)
    want = reference_postprocess(tensor, "softmax", size)
    np.testing.assert_allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(category, reference_postprocess(_tensor(2), "softmax", size).category_mask)


@pytest.mark.parametrize("event", ["larger frames", "trim", "trim context", "views off"])
def test_held_results_survive_what_replaces_buffers(owned_views, event):
    """Larger outputs grow or replace free buffers, trim() releases free ones, switching the candidate
    off replaces free buffers of the other mapping: none of it touches a held result's buffer."""
    pp = owned_views()
    size = (40, 32)
    tensor = _tensor(1)
    result = pp.process(tensor, size)
    assert _is_view(result.confidence_masks)
    if event == "larger frames":
        for seed, big in enumerate([(640, 480), (1024, 768), (1280, 960)], 2):
            _check(pp.process(_tensor(seed), big), _tensor(seed), big)
    elif event in ("trim", "trim context"):
        pp.trim(release_context=event == "trim context")
    else:
        pp._supervisor.generation.pipeline.owned_views = False
    for seed in range(5, 10):
        _check(pp.process(_tensor(seed), size), _tensor(seed), size)
    _check(result, tensor, size)


def test_held_owned_results_leave_frames_in_flight_and_views_their_buffers(owned_views):
    pp = owned_views()
    size = (40, 32)
    held = [(seed, pp.process(_tensor(seed), size)) for seed in range(1, 4)]
    assert all(_is_view(result.confidence_masks) for _, result in held)
    pending = [pp.submit(_tensor(seed), size) for seed in (4, 5)]  # two frames in flight
    with pp.process_view(_tensor(6), size) as view:
        _check(view, _tensor(6), size)
    for seed, frame in zip((4, 5), pending, strict=True):
        _check(frame.result(), _tensor(seed), size)
    for seed, result in held:
        _check(result, _tensor(seed), size)


def test_owned_views_buffers_are_mapped_for_writing(owned_views):
    """GL_BUFFER_ACCESS_FLAGS of the lent buffer include GL_MAP_WRITE_BIT (writing through a
    read-only mapping is undefined in GL, even where the memory happens to be writeable)."""
    import ctypes

    from gpu_seg.gl import rawgl

    pp = owned_views()
    result = pp.process(_tensor(1), (40, 32))
    assert _is_view(result.confidence_masks)
    readback = pp._supervisor.generation.pipeline._readback
    (slot,) = [slot for slot in readback._slots if slot.lent_root is not None]

    def access_flags(ctx) -> int:  # on the GL thread, the context current
        get = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_int))(
            rawgl.resolve("glGetBufferParameteriv")
        )
        value = ctypes.c_int(0)
        slot.arena.gl.glBindBuffer(rawgl.GL_COPY_WRITE_BUFFER, slot.arena.buffer.name)
        get(rawgl.GL_COPY_WRITE_BUFFER, GL_BUFFER_ACCESS_FLAGS, ctypes.byref(value))
        slot.arena.gl.glBindBuffer(rawgl.GL_COPY_WRITE_BUFFER, 0)
        return value.value

    flags = pp.run_gl(access_flags)
    assert flags & rawgl.GL_MAP_WRITE_BIT and flags & rawgl.GL_MAP_READ_BIT


def test_caller_arrays_and_frames_in_flight_are_not_views(owned_views):
    pp = owned_views()
    size = (40, 32)
    tensor = _tensor(3)
    want = reference_postprocess(tensor, "softmax", size)
    conf, cat = np.empty_like(want.confidence_masks), np.empty_like(want.category_mask)
    result = pp.process(tensor, size, confidence_out=conf, category_out=cat)
    assert result.confidence_masks is conf and result.category_mask is cat
    _check(result, tensor, size)
    pending = pp.submit(tensor, size)
    collected = pending.result()
    assert not _is_view(collected.confidence_masks)
    _check(collected, tensor, size)
