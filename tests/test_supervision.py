"""The processor's supervision of its GL side: locks, events, caller memory, shared settings.

Each test here was written against a defect of the first version (issue 9) and failed there.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

import gpu_seg
from gpu_seg import testing
from gpu_seg.resilience import Backoff, LossBudget, RecoveryPolicy

SIZE = (37, 29)


def _tensor(seed: int, shape=(12, 10, 5)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(np.float32)


def _want(tensor, size=SIZE):
    return gpu_seg.reference_postprocess(tensor, "softmax", size)


def _assert_correct(result, tensor, size=SIZE):
    want = _want(tensor, size)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


@pytest.fixture
def processors(new_processor):
    return new_processor


def _direct_readback(pp):
    """Read back the way llvmpipe does (GL reads into arrays); the mapped path has its own test."""
    pipeline = pp._supervisor.generation.pipeline
    pipeline.readback = "direct"
    pp.process(_tensor(0), SIZE)  # the strategy switches at the next frame
    assert pipeline.collect_needs_gl
    return pipeline


def _lose_inside_the_frame(pp):
    """Make the next GL frame destroy its own context after its readback (a loss mid-frame)."""
    pipeline = _direct_readback(pp)
    session = pp._supervisor.generation.session
    original = pipeline.process

    def process_then_die(*args, **kwargs):
        original(*args, **kwargs)
        pipeline.process = original
        session.egl_context.destroy()  # destroyed while current: the health check must see it

    pipeline.process = process_then_die


def test_a_frame_lost_after_readback_never_writes_the_callers_arrays(processors):
    pp = processors("softmax", backend="gl", policy=RecoveryPolicy(budget=LossBudget(capacity=0)))
    tensor = _tensor(1)
    pp.process(tensor, SIZE)
    confidence = np.full((5, SIZE[1], SIZE[0]), -7.0, np.float32)
    category = np.full((SIZE[1], SIZE[0]), 77, np.uint8)
    _lose_inside_the_frame(pp)
    with pytest.raises(gpu_seg.ContextLostError):
        pp.process(tensor, SIZE, confidence_out=confidence, category_out=category)
    assert (confidence == -7.0).all() and (category == 77).all()


def test_a_frame_lost_after_readback_is_recomputed_into_the_callers_arrays(processors):
    pp = processors("softmax", backend="gl")
    tensor = _tensor(2)
    pp.process(tensor, SIZE)
    confidence = np.full((5, SIZE[1], SIZE[0]), -7.0, np.float32)
    category = np.full((SIZE[1], SIZE[0]), 77, np.uint8)
    _lose_inside_the_frame(pp)
    result = pp.process(tensor, SIZE, confidence_out=confidence, category_out=category)
    assert result.confidence_masks is confidence and result.category_mask is category
    _assert_correct(result, tensor)
    assert pp.stats["context_losses"] == 1 and pp.stats["rebuilds"] == 1


def test_a_timed_out_frame_that_finishes_later_cannot_touch_the_callers_arrays(processors):
    pp = processors("softmax", gl_timeout=1.0, readback="direct")  # also after the rebuild (GPUs: mapped)
    tensor = _tensor(3)
    pp.process(tensor, SIZE)
    pipeline = _direct_readback(pp)
    original = pipeline.process
    release = threading.Event()
    finished = threading.Event()
    stuck = {}

    def hang_then_scribble(frame, confidence, category):
        stuck["arrays"] = (confidence, category)
        release.wait()
        confidence[...] = -1.0  # what a stuck driver call completing late would do
        category[...] = 13
        finished.set()

    pipeline.process = hang_then_scribble
    confidence = np.empty((5, SIZE[1], SIZE[0]), np.float32)
    category = np.empty((SIZE[1], SIZE[0]), np.uint8)
    result = pp.process(tensor, SIZE, confidence_out=confidence, category_out=category)
    pipeline.process = original
    kept = confidence.copy(), category.copy()
    release.set()
    assert finished.wait(5.0)
    _assert_correct(result, tensor)
    np.testing.assert_array_equal(confidence, kept[0])
    np.testing.assert_array_equal(category, kept[1])
    # The stuck attempt's arrays are never handed to a later frame either.
    kept_pairs = list(pp._supervisor._staging)  # (key, confidence, category) kept for the next frames
    assert len(kept_pairs) == 1
    staging = kept_pairs[0]
    assert staging[1] is not stuck["arrays"][0] and staging[2] is not stuck["arrays"][1]
    again = pp.process(_tensor(4), SIZE, confidence_out=confidence, category_out=category)
    _assert_correct(again, _tensor(4))


def test_backoff_does_not_hold_the_lock_other_threads_run_on_the_cpu(processors):
    policy = RecoveryPolicy(
        budget=LossBudget(capacity=100), backoff=Backoff(base=1.5, cap=1.5), quick_succession=60.0
    )
    pp = processors("softmax", policy=policy)
    gpu_seg.cpu.warm_up()  # the CPU frame below is timed: not its kernels' first compilation
    tensor = _tensor(4)
    pp.process(tensor, SIZE)
    testing.lose_context(pp)
    pp.process(tensor, SIZE)  # first loss: rebuilt at once
    testing.lose_context(pp)  # second loss in quick succession: the rebuild waits 1.5 s
    waiter = threading.Thread(target=pp.process, args=(tensor, SIZE))
    waiter.start()
    time.sleep(0.2)  # the waiter has seen the loss and sleeps through the backoff
    started = time.monotonic()
    result = pp.process(_tensor(5), SIZE)
    elapsed = time.monotonic() - started
    waiter.join()
    assert result.backend == "cpu" and elapsed < 1.0, elapsed
    _assert_correct(result, _tensor(5))
    assert pp.stats["backoff_cpu_frames"] == 1
    assert pp.process(tensor, SIZE).backend == "gl"


def test_an_event_callback_that_raises_changes_nothing(processors, caplog):
    calls = []

    def bad_callback(event):
        calls.append(event.kind)
        raise RuntimeError("application bug")

    pp = processors("softmax", on_event=bad_callback)
    tensor = _tensor(6)
    pp.process(tensor, SIZE)
    testing.lose_context(pp)
    with caplog.at_level(logging.ERROR, logger="gpu_seg"):
        result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert calls == ["context_lost", "rebuilt"]
    assert pp.stats["context_losses"] == 1 and pp.stats["rebuilds"] == 1
    assert "on_event callback raised" in caplog.text
    assert pp.process(tensor, SIZE).backend == "gl" and pp.stats["context_losses"] == 1


def test_an_event_callback_may_call_the_processor(processors):
    seen = []
    holder = {}

    def callback(event):
        if event.kind == gpu_seg.EventKind.CONTEXT_LOST:
            # Runs after the lock is released and after the dead generation was dropped.
            seen.append(holder["pp"].process(_tensor(7), SIZE).backend)
            seen.append(holder["pp"].stats["context_losses"])

    pp = holder["pp"] = processors("softmax", on_event=callback)
    tensor = _tensor(8)
    pp.process(tensor, SIZE)
    testing.lose_context(pp)
    _assert_correct(pp.process(tensor, SIZE), tensor)
    assert seen == ["gl", 1]
    assert pp.stats["context_losses"] == 1


def test_one_policy_shared_by_two_processors_keeps_their_budgets_apart(processors):
    policy = RecoveryPolicy(budget=LossBudget(capacity=1))
    first, second = processors("softmax", policy=policy), processors("softmax", policy=policy)
    tensor = _tensor(9)
    first.process(tensor, SIZE)
    second.process(tensor, SIZE)
    testing.exhaust_loss_budget(first)
    testing.lose_context(first)
    assert first.process(tensor, SIZE).backend == "cpu"
    assert first.stats["fallback_active"] and not second.stats["fallback_active"]
    testing.lose_context(second)
    assert second.process(tensor, SIZE).backend == "gl"  # its own budget still holds


def test_stats_while_other_threads_churn_output_sizes(processors):
    pp = processors("softmax")
    errors = []
    stop = threading.Event()

    def churn(seed):
        rng = np.random.default_rng(seed)
        tensor = _tensor(seed)
        try:
            while not stop.is_set():
                pp.process(tensor, (int(rng.integers(8, 64)), int(rng.integers(8, 64))))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            stats = pp.stats
            assert stats["live_gl_objects"] >= 1 and pp.live_gl_objects() >= 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


def test_attach_and_trim_after_close_raise_closed_error(processors):
    pp = processors("softmax")
    pp.close()
    with pytest.raises(gpu_seg.ClosedError):
        pp.attach()
    with pytest.raises(gpu_seg.ClosedError):
        pp.trim()


def test_bad_policy_and_idle_arguments_name_themselves():
    with pytest.raises(gpu_seg.InputError, match="policy"):
        gpu_seg.SegmentationPostprocessor("softmax", backend="cpu", policy=object())
    with pytest.raises(gpu_seg.InputError, match="idle_release_after"):
        gpu_seg.SegmentationPostprocessor("softmax", backend="cpu", idle_release_after=-1)


def test_idle_release_frees_the_context_and_the_next_frame_is_exact(processors):
    events = []
    pp = processors("softmax", idle_release_after=1.0, idle_release_context=True, on_event=events.append)
    tensor = _tensor(10)
    pp.process(tensor, SIZE)
    assert pp.stats["trims"] == 0
    deadline = time.monotonic() + 5.0
    while pp.live_gl_objects() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pp.live_gl_objects() == 0 and pp.stats["trims"] == 1
    result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert pp.stats["context_losses"] == 0
    assert [e.kind for e in events] == ["trimmed"]
    deadline = time.monotonic() + 5.0  # idle again: released again
    while pp.stats["trims"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pp.live_gl_objects() == 0 and pp.stats["trims"] == 2


def test_a_processor_that_never_gets_a_frame_is_released_when_idle(new_processor):
    """The constructor makes the context; the idle watch counted only from the first frame, so a
    processor that never got one kept its context for good."""
    pp = new_processor("softmax", backend="gl", idle_release_after=1.0, idle_release_context=True)
    assert pp.live_gl_objects() > 0  # (a shorter period could pass first on a loaded machine)
    deadline = time.monotonic() + 10.0
    while pp.stats["trims"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pp.stats["trims"] == 1 and pp.live_gl_objects() == 0
    tensor = _tensor(12)
    result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)


def test_idle_watch_stays_quiet_while_frames_arrive(processors):
    pp = processors("softmax", idle_release_after=2.0, idle_release_context=True)  # >> a frame, loaded
    tensor = _tensor(11)
    for _ in range(8):
        pp.process(tensor, SIZE)
        time.sleep(0.1)
    assert pp.stats["trims"] == 0


def test_stats_report_gpu_memory_where_the_driver_does(processors):
    pp = processors("softmax")
    pp.process(_tensor(12), SIZE)
    memory = pp.stats["gpu_memory"]
    extensions = pp._supervisor.generation.session.mgl.extensions
    if "GL_NVX_gpu_memory_info" in extensions:
        assert memory["source"] == "GL_NVX_gpu_memory_info"
        assert 0 < memory["available_kib"] <= memory["total_kib"]
    elif "GL_ATI_meminfo" in extensions:
        assert memory["texture_free_kib"] > 0
    else:
        assert memory is None  # llvmpipe says nothing
    assert pp.stats["programs"] > 0


def test_mapped_readback_copies_into_the_callers_arrays_only_after_the_health_check(processors):
    pp = processors("softmax", backend="gl", policy=RecoveryPolicy(budget=LossBudget(capacity=0)))
    tensor = _tensor(13)
    pp.process(tensor, SIZE)
    generation = pp._supervisor.generation
    generation.pipeline.readback = "mapped"
    result = pp.process(tensor, SIZE)  # mapped frames are exact too
    _assert_correct(result, tensor)
    assert not generation.pipeline.collect_needs_gl
    original_wait = generation.pipeline.wait

    def wait_then_die(*args):
        original_wait(*args)
        generation.session.egl_context.destroy()  # lost after the results reached host memory

    generation.pipeline.wait = wait_then_die
    confidence = np.full((5, SIZE[1], SIZE[0]), -7.0, np.float32)
    category = np.full((SIZE[1], SIZE[0]), 77, np.uint8)
    with pytest.raises(gpu_seg.ContextLostError):
        pp.process(tensor, SIZE, confidence_out=confidence, category_out=category)
    assert (confidence == -7.0).all() and (category == 77).all()


def test_preallocated_outputs_reuse_one_staging_pair_and_stay_exact(processors):
    pp = processors("softmax", backend="gl")
    _direct_readback(pp)
    confidence = np.empty((5, SIZE[1], SIZE[0]), np.float32)
    category = np.empty((SIZE[1], SIZE[0]), np.uint8)
    kept = []
    for seed in range(3):
        tensor = _tensor(20 + seed)
        result = pp.process(tensor, SIZE, confidence_out=confidence, category_out=category)
        assert result.confidence_masks is confidence and result.category_mask is category
        _assert_correct(result, tensor)
        (staging,) = pp._supervisor._staging  # (key, confidence, category) kept for the next frames
        assert staging[1] is not confidence and staging[2] is not category
        kept.append(staging[1])
    assert kept[0] is kept[1] is kept[2]  # reused, not reallocated per frame
    owned = pp.process(_tensor(30), SIZE)  # without caller arrays: fresh arrays, never the staging
    assert owned.confidence_masks is not pp._supervisor._staging[0][1]
    _assert_correct(owned, _tensor(30))


def test_trim_and_close_let_go_of_the_staging_pair(processors):
    """The staging pair (host arrays of the frame's size, 35 MB at 1080p with 4 masks) is memory the
    trim and the idle release promise to give back."""
    pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback="direct")
    try:
        confidence = np.empty((5, SIZE[1], SIZE[0]), np.float32)
        pp.process(_tensor(40), SIZE, confidence_out=confidence)
        assert len(pp._supervisor._staging) == 1
        pp.trim()
        assert len(pp._supervisor._staging) == 0
        pp.process(_tensor(41), SIZE, confidence_out=confidence)
        assert len(pp._supervisor._staging) == 1
        supervisor = pp._supervisor
    finally:
        pp.close()
    assert len(supervisor._staging) == 0
