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
    later_tensor = _tensor(2)
    later = pp.process(later_tensor, size)  # detects the loss, rebuilds, recomputes
    assert pp.stats["context_losses"] == 1
    _check(later, later_tensor, size)
    _check(result, tensor, size)
    pp.close()
    _check(result, tensor, size)
    _check(later, later_tensor, size)


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
