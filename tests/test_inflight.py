"""Frames in flight (``submit``) and zero-copy views (``process_view``) on a real EGL context.

The mapped readback (a ring of persistently mapped buffers) is forced with ``readback="mapped"``
(llvmpipe's default is the direct one). Every result is compared with the numpy reference.
"""

from __future__ import annotations

import functools
import gc
import weakref

import numpy as np
import pytest

import gpu_seg
from gpu_seg.testing import exhaust_loss_budget, fail_next_links, lose_context

SIZE = (37, 29)


def _tensor(seed: int, shape=(12, 10, 5)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(np.float32)


def _assert_correct(result, tensor, size=SIZE):
    want = gpu_seg.reference_postprocess(tensor, "softmax", size)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


@pytest.fixture
def make_pp(new_processor):
    return functools.partial(new_processor, readback="mapped")


def _mapped(pp) -> bool:
    return pp._supervisor.generation.pipeline.lends


# ----------------------------------------------------------------------------- zero-copy views
def test_a_view_is_exact_read_only_and_zero_copy(make_pp):
    pp = make_pp(backend="gl")
    tensor = _tensor(1)
    with pp.process_view(tensor, SIZE) as view:
        assert view.zero_copy and view.backend == "gl"
        _assert_correct(view, tensor)
        assert view.confidence_masks.flags.c_contiguous
        assert not view.confidence_masks.flags.owndata
        with pytest.raises(ValueError, match="read-only"):
            view.confidence_masks[0, 0, 0] = 1.0
        with pytest.raises(ValueError):
            view.category_mask.flags.writeable = True  # the memory itself is lent read-only
    assert view.released
    with pytest.raises(gpu_seg.ExpiredResultError):
        _ = view.confidence_masks
    with pytest.raises(gpu_seg.ExpiredResultError):
        view.to_result()


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_views_of_encoded_confidence_formats_equal_owned_results(make_pp, dtype):
    pp = make_pp(backend="gl", confidence_dtype=dtype)
    tensor = _tensor(2)
    owned = pp.process(tensor, SIZE)
    with pp.process_view(tensor, SIZE) as view:
        assert view.zero_copy
        assert view.confidence_masks.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(view.confidence_masks, owned.confidence_masks)
        np.testing.assert_array_equal(view.category_mask, owned.category_mask)


def test_arrays_kept_past_release_are_never_overwritten(make_pp):
    """The misuse (holding a view's array after release) is harmless: the buffer is not reused."""
    pp = make_pp(backend="gl")
    first = _tensor(3)
    view = pp.process_view(first, SIZE)
    confidence, category = view.confidence_masks, view.category_mask[2:, 1:]  # a derived view too
    view.release()
    for seed in range(10, 18):  # ordinary frames, views and frames in flight reuse the free buffers
        other = _tensor(seed)
        _assert_correct(pp.process(other, SIZE), other)
        with pp.process_view(other, SIZE) as again:
            _assert_correct(again, other)
        _assert_correct(pp.submit(other, SIZE).result(), other)
    want = gpu_seg.reference_postprocess(first, "softmax", SIZE)
    np.testing.assert_allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(category, want.category_mask[2:, 1:])


def test_too_many_held_views_raise_capacity_error_and_ordinary_frames_still_run(make_pp):
    pp = make_pp(backend="gl")
    tensor = _tensor(4)
    held = [pp.process_view(tensor, SIZE) for _ in range(3)]  # four buffers, one kept for process()
    with pytest.raises(gpu_seg.CapacityError, match="zero-copy"):
        pp.process_view(tensor, SIZE)
    with pytest.raises(gpu_seg.CapacityError):
        pp.submit(tensor, SIZE)
    _assert_correct(pp.process(tensor, SIZE), tensor)  # never blocked by views
    held[0].release()
    _assert_correct(pp.process_view(tensor, SIZE), tensor)  # released and unreferenced: reused
    del held
    gc.collect()
    views = [pp.process_view(tensor, SIZE) for _ in range(3)]
    assert all(v.zero_copy for v in views)


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copies_of_a_view_are_owned_read_only_and_say_so(make_pp, how):
    import copy
    import pickle

    duplicate = {
        "copy": copy.copy,
        "deepcopy": copy.deepcopy,
        "pickle": lambda v: pickle.loads(pickle.dumps(v)),
    }[how]
    pp = make_pp(backend="gl")
    tensor = _tensor(8)
    view = pp.process_view(tensor, SIZE)
    twin = duplicate(view)
    assert not twin.zero_copy and "owned" in repr(twin)
    _assert_correct(twin, tensor)
    for original, copied in (
        (view.confidence_masks, twin.confidence_masks),
        (view.category_mask, twin.category_mask),
    ):
        assert not copied.flags.writeable and not np.shares_memory(original, copied)
    view.release()
    assert duplicate(view).released


def test_views_on_the_cpu_path_are_owned_copies(make_pp):
    pp = make_pp(backend="cpu")
    tensor = _tensor(5)
    with pp.process_view(tensor, SIZE) as view:
        assert view.backend == "cpu" and not view.zero_copy
        _assert_correct(view, tensor)


# ----------------------------------------------------------------------------- frames in flight
def test_frames_in_flight_are_exact_in_any_collection_order(make_pp):
    pp = make_pp(backend="gl")
    tensors = [_tensor(20 + i) for i in range(3)]
    pending = [pp.submit(t, SIZE) for t in tensors]
    assert all(p.in_flight for p in pending)
    with pytest.raises(gpu_seg.CapacityError, match="in flight"):
        pp.submit(tensors[0], SIZE)
    _assert_correct(pending[2].result(), tensors[2])
    with pending[0].view() as view:
        assert view.zero_copy
        _assert_correct(view, tensors[0])
    _assert_correct(pending[1].result(), tensors[1])
    with pytest.raises(gpu_seg.ExpiredResultError):
        pending[1].result()


def test_a_dropped_pending_frame_frees_its_buffer(make_pp):
    pp = make_pp(backend="gl")
    tensor = _tensor(6)
    pending = [pp.submit(tensor, SIZE) for _ in range(3)]
    with pytest.raises(gpu_seg.CapacityError):
        pp.submit(tensor, SIZE)
    del pending[1]
    gc.collect()
    _assert_correct(pp.submit(tensor, SIZE).result(), tensor)
    for p in pending:
        _assert_correct(p.result(), tensor)


class _Cycle:
    """A record that refers to itself, as callbacks and closures often make: freed only by a
    garbage collection."""

    def __init__(self, held, *derived) -> None:
        self.held, self.derived = held, derived
        self.me = self


@pytest.mark.parametrize("kind", ["view", "pending frame"])
def test_results_dropped_in_reference_cycles_do_not_fill_the_ring(make_pp, kind):
    pp = make_pp(backend="gl")
    tensor = _tensor(7)
    gc.collect()
    gc.disable()  # the cycles are freed by the processor's collection, not by an automatic one
    try:
        for _ in range(8):
            if kind == "view":
                view = pp.process_view(tensor, SIZE)
                record = _Cycle(view, view.category_mask)  # an array taken from the view
                del view
            else:
                record = _Cycle(pp.submit(tensor, SIZE))
            del record  # unreachable, not freed
        _assert_correct(pp.process_view(tensor, SIZE), tensor)
    finally:
        gc.enable()


def test_views_held_for_real_are_refused_without_a_collection_each_time(make_pp, monkeypatch):
    """A full collection on every refusal (the back-pressure an application with 3 views held
    meets each frame) took tens of ms under the processor's lock with a large heap."""
    from gpu_seg.gl import readback

    collections = []
    monkeypatch.setattr(readback.gc, "collect", lambda *args: collections.append(args) or 0)
    pp = make_pp(backend="gl")
    tensor = _tensor(9)
    held = [pp.process_view(tensor, SIZE) for _ in range(3)]
    for _ in range(5):
        with pytest.raises(gpu_seg.CapacityError):
            pp.process_view(tensor, SIZE)
    assert len(collections) == 1  # the first refusal looked for dropped views; none were there
    held.clear()
    _assert_correct(pp.process_view(tensor, SIZE), tensor)


def test_submit_into_callers_arrays_writes_them_when_collected(make_pp):
    pp = make_pp(backend="gl")
    tensor = _tensor(7)
    confidence = np.full((5, SIZE[1], SIZE[0]), -3.0, np.float32)
    category = np.full((SIZE[1], SIZE[0]), 9, np.uint8)
    pending = pp.submit(tensor, SIZE, confidence_out=confidence, category_out=category)
    result = pending.result()
    assert result.confidence_masks is confidence and result.category_mask is category
    _assert_correct(result, tensor)


@pytest.mark.parametrize("readback", ["mapped", "direct"])
def test_a_view_of_callers_arrays_leaves_them_writeable_for_the_next_frame(new_processor, readback):
    """The hot loop: the same preallocated arrays every frame, collected as a view. The view is
    read-only; the caller's arrays stay the caller's (they were left read-only for good before)."""
    pp = new_processor("softmax", backend="gl", readback=readback)
    confidence = np.empty((5, SIZE[1], SIZE[0]), np.float32)
    category = np.empty((SIZE[1], SIZE[0]), np.uint8)
    for seed in (8, 9):
        tensor = _tensor(seed)
        with pp.submit(tensor, SIZE, confidence_out=confidence, category_out=category).view() as view:
            assert not view.zero_copy
            assert not view.confidence_masks.flags.writeable and not view.category_mask.flags.writeable
            assert np.shares_memory(view.confidence_masks, confidence)
            _assert_correct(view, tensor)
        assert confidence.flags.writeable and category.flags.writeable
    pp.process(_tensor(10), SIZE, confidence_out=confidence, category_out=category)
    _assert_correct(gpu_seg.Result(confidence, category, "gl"), _tensor(10))


def test_frames_in_flight_hit_by_a_real_context_loss_are_recomputed(make_pp):
    events = []
    pp = make_pp(backend="auto", on_event=events.append)
    tensors = [_tensor(30 + i) for i in range(3)]
    pp.process(tensors[0], SIZE)
    pending = [pp.submit(t, SIZE) for t in tensors]
    assert all(p.in_flight for p in pending)
    lose_context(pp)  # a real eglDestroyContext under the queued frames
    for p, tensor in zip(pending, tensors, strict=True):
        result = p.result()
        assert result.backend == "gl"
        _assert_correct(result, tensor)
    kinds = [e.kind.value for e in events]
    assert kinds == ["context_lost", "rebuilt"]
    assert pp.stats["context_losses"] == 1


def test_frames_in_flight_raise_when_gl_cannot_recompute_them(make_pp):
    pp = make_pp(backend="gl")
    tensor = _tensor(8)
    confidence = np.full((5, SIZE[1], SIZE[0]), -3.0, np.float32)
    pending = [pp.submit(tensor, SIZE, confidence_out=confidence), pp.submit(tensor, SIZE)]
    exhaust_loss_budget(pp)
    lose_context(pp)
    with pytest.raises(gpu_seg.ContextLostError):
        pending[0].result()
    assert (confidence == -3.0).all()  # never written with anything
    with pending[1].view() as view:  # the next call may build a new context ("gl" raised once)
        _assert_correct(view, tensor)


def test_frames_in_flight_go_to_the_cpu_when_the_budget_is_spent(make_pp):
    pp = make_pp(backend="auto")
    tensor = _tensor(9)
    pending = pp.submit(tensor, SIZE)
    exhaust_loss_budget(pp)
    lose_context(pp)
    result = pending.result()
    assert result.backend == "cpu"
    _assert_correct(result, tensor)


def _keeper(pp) -> weakref.ref:
    """The current generation's keeper context (made by its first lent view), weakly."""
    keeper = pp._supervisor.generation.session._keeper
    assert keeper is not None
    return weakref.ref(keeper)


def test_a_view_held_across_a_detected_loss_stays_valid_until_dropped(make_pp):
    """A loss found while a view is held ends that generation at once; the view's keeper context
    keeps the share group and the mapping until the view's last array goes."""
    pp = make_pp(backend="gl")
    tensor = _tensor(10)
    view = pp.process_view(tensor, SIZE)
    confidence = view.confidence_masks
    keeper = _keeper(pp)
    pp.trim()  # programs released: the next frame links again...
    fail_next_links(pp)  # ...and that link fails the way it fails on a lost context
    other = _tensor(11)
    _assert_correct(pp.process(other, SIZE), other)  # rebuilt on a new generation
    assert pp.stats["context_losses"] == 1
    assert pp._supervisor._graveyard == [] and keeper() is not None  # held by the view alone
    _assert_correct(view, tensor)
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    view.release()
    np.testing.assert_allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
    del confidence
    gc.collect()
    assert keeper() is None  # destroyed once the last array went


def test_a_view_held_while_the_context_is_destroyed_stays_readable(make_pp):
    """A real eglDestroyContext under a held view: a keeper context in the share group keeps the
    mapped memory (without it, reading the view afterwards crashed the process)."""
    events = []
    pp = make_pp(backend="gl", on_event=events.append)
    tensor = _tensor(15)
    view = pp.process_view(tensor, SIZE)
    confidence, category = view.confidence_masks, view.category_mask
    keeper = _keeper(pp)
    view.release()
    lose_context(pp)
    other = _tensor(16)
    _assert_correct(pp.process(other, SIZE), other)  # the loss is found and the frame recomputed
    assert [e.kind.value for e in events] == ["context_lost", "rebuilt"]
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    np.testing.assert_allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(category, want.category_mask)
    assert pp._supervisor._graveyard == [] and keeper() is not None
    del confidence, category
    gc.collect()
    assert keeper() is None


@pytest.mark.parametrize("release_context", [False, True])
def test_frames_in_flight_across_a_trim_are_recomputed(make_pp, release_context):
    pp = make_pp(backend="gl")
    tensors = [_tensor(40 + i) for i in range(2)]
    pending = [pp.submit(t, SIZE) for t in tensors]
    pp.trim(release_context=release_context)  # frees the ring's buffers (or the whole context)
    for p, tensor in zip(pending, tensors, strict=True):
        _assert_correct(p.result(), tensor)


@pytest.mark.parametrize("release_context", [False, True])
def test_a_view_held_across_a_trim_keeps_its_data(make_pp, release_context):
    pp = make_pp(backend="gl")
    tensor, other = _tensor(50), _tensor(51)
    view = pp.process_view(tensor, SIZE)
    confidence = view.confidence_masks
    pp.trim(release_context=release_context)
    for _ in range(3):
        _assert_correct(pp.process(other, SIZE), other)
        _assert_correct(pp.process_view(other, SIZE), other)
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    np.testing.assert_allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
    _assert_correct(view, tensor)
    view.release()
    del confidence
    gc.collect()
    pp.process(other, SIZE)
    assert pp._supervisor._graveyard == []
    pp.close()
    assert pp.live_gl_objects() == 0


def test_arrays_of_a_view_stay_readable_after_close(make_pp, caplog):
    """close() destroys the context at once; the arrays keep the keeper context, and with it the
    mapped memory, until they go: then it is destroyed too (nothing left until the process exits)."""
    pp = make_pp(backend="gl")
    tensor = _tensor(52)
    with pp.process_view(tensor, SIZE) as view:
        confidence, category = view.confidence_masks, view.category_mask
    keeper = _keeper(pp)
    with caplog.at_level("WARNING", logger="gpu_seg"):
        pp.close()
    assert "zero-copy views" not in caplog.text and pp.live_gl_objects() == 0
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    np.testing.assert_allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(category, want.category_mask)
    assert keeper() is not None
    del confidence, category
    gc.collect()
    assert keeper() is None


def test_pending_frames_of_a_closed_processor_raise(make_pp):
    pp = make_pp(backend="gl")
    pending = pp.submit(_tensor(12), SIZE)
    pp.close()
    with pytest.raises(gpu_seg.ClosedError):
        pending.result()


def test_direct_readback_computes_at_submission(make_pp):
    pp = make_pp(backend="gl", readback="direct")
    tensor = _tensor(13)
    pending = pp.submit(tensor, SIZE)
    assert not pending.in_flight
    with pending.view() as view:
        assert not view.zero_copy
        _assert_correct(view, tensor)


def test_ring_and_objects_stay_bounded_over_many_frames(make_pp):
    pp = make_pp(backend="gl")
    tensor = _tensor(14)
    warm = [pp.submit(tensor, SIZE) for _ in range(3)]  # the ring at its largest: 3 + 1 buffers
    pp.process(tensor, SIZE)
    del warm
    baseline = pp.live_gl_objects()
    for i in range(40):
        pending = [pp.submit(tensor, SIZE) for _ in range(1 + i % 3)]
        views = [p.view() for p in pending]
        for v in views:
            v.release()
    assert pp.live_gl_objects() == baseline
    assert pp._supervisor.generation.pipeline._readback.objects() <= 4


def test_bad_readback_option_is_an_input_error():
    with pytest.raises(gpu_seg.InputError, match="readback"):
        gpu_seg.SegmentationPostprocessor(readback="zero")


_VIEWS_OUTLIVE_THE_PROCESSOR = r"""
import gc, sys
import numpy as np
import gpu_seg
from gpu_seg.testing import lose_context

mode, how = sys.argv[1], sys.argv[2]
size = (2048, 2048)  # 64 MiB of masks: freed memory is unmapped, not reused in place
tensor = (np.random.default_rng(1).standard_normal((12, 10, 4)) * 3).astype(np.float32)
want = gpu_seg.reference_postprocess(tensor, "softmax", size)
pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback="mapped", software_renderer="gl")
pp.process(tensor, (40, 32))
if mode == "owned views":
    pp._supervisor.generation.pipeline.owned_views = True
    result = pp.process(tensor, size)
    confidence, category = result.confidence_masks, result.category_mask
    assert not confidence.flags.owndata, "not an owned view"
else:
    view = pp.process_view(tensor, size)
    confidence, category = view.confidence_masks, view.category_mask
if how == "loss":
    lose_context(pp)
    pp.process(tensor, size)  # detects the loss and rebuilds while the views are held
pp.close()  # a live context is released with the views held
del pp
gc.collect()  # the processor, its supervisor and the graveyard's sessions are gone
ok = np.allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
ok = ok and np.array_equal(category, want.category_mask)
print("intact" if ok else "changed", flush=True)
"""


@pytest.mark.parametrize("how", ["loss", "close"])
@pytest.mark.parametrize("mode", ["views", "owned views"])
def test_held_views_outlive_a_lost_and_collected_processor(mode, how):
    """Views held across a real context loss (or none), ``close()`` and the garbage collection of the
    processor keep the memory they view (the keeper context lives as long as they do): they read their
    masks, never freed memory (a crash) or another allocation's bytes. In a subprocess: a crash is a failure
    of this test, not of the test run."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _VIEWS_OUTLIVE_THE_PROCESSOR, mode, how],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert proc.stdout.strip().splitlines()[-1] == "intact", proc.stdout
