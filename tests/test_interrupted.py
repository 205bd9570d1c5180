"""Frames whose caller is interrupted while it waits for the GL thread (``KeyboardInterrupt``, or any
exception a signal handler raises: a server's request timeout).

The GL thread still runs the frame it was handed: it takes a result buffer, and nobody collects the
frame. Before, every such frame kept its buffer of the mapped readback's ring for good: after four,
every frame of the processor raised CapacityError, for the rest of its life. Each round here blocks the
GL thread, lets ``process()`` queue its frame behind it, interrupts the caller with a real signal, then
lets the GL thread go on.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import gpu_seg

from .interrupting import InjectedError, injected_at, sweep

SIZE = (40, 32)


class Interrupted(BaseException):
    """What the test's signal handler raises (as KeyboardInterrupt would be)."""


def _tensor() -> np.ndarray:
    return (np.random.default_rng(5).standard_normal((12, 10, 4)) * 3).astype(np.float32)


def _interrupt_one_frame(pp: gpu_seg.SegmentationPostprocessor, call) -> None:
    """``call()`` while the GL thread is busy; a signal interrupts the caller while it waits."""
    gl_thread = pp._supervisor._thread
    blocked, go = threading.Event(), threading.Event()

    def block() -> None:
        blocked.set()
        go.wait(30)

    holder = threading.Thread(target=gl_thread.call, args=(block,))
    holder.start()
    assert blocked.wait(30)
    interrupter = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    interrupter.start()
    try:
        with pytest.raises(Interrupted):
            call()  # queued behind block(): interrupted while it waits
    finally:
        interrupter.cancel()
        go.set()
        holder.join(30)


@pytest.fixture
def interruptible():
    if threading.current_thread() is not threading.main_thread():  # some pytest-xdist versions
        pytest.skip("signal handlers can only be set on the main thread, and tests run on another here")

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("kind", ["process", "process_view", "owned views"])
def test_interrupted_frames_leave_no_result_buffer_taken(new_processor, interruptible, kind):
    tensor = _tensor()
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    pp = new_processor(backend="gl", readback="mapped")
    pp.process(tensor, SIZE)
    pipeline = pp._supervisor.generation.pipeline
    if not pipeline.lends:
        pytest.skip(f"no GL_ARB_buffer_storage on {pipeline.renderer}: no mapped readback")
    pipeline.owned_views = kind == "owned views"
    call = pp.process_view if kind == "process_view" else pp.process
    call(tensor, SIZE)  # views make their keeper context once, on the GL thread: done before
    for _ in range(6):  # more than the ring's buffers (MappedReadback.MAX_SLOTS, MAX_OWNED)
        _interrupt_one_frame(pp, lambda: call(tensor, SIZE))
    for _ in range(3):
        got = call(tensor, SIZE)
        assert np.allclose(got.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
        assert np.array_equal(got.category_mask, want.category_mask)
        if kind == "process_view":
            got.release()
        del got
    view = pp.process_view(tensor, SIZE)  # and zero-copy views still have their buffers
    assert view.zero_copy
    view.release()
    assert pp.stats["context_losses"] == 0 and pp._supervisor.generation is not None
    started, lent, owned = pipeline._readback.busy_slots()
    assert started == 0, (started, lent, owned)


def _tensors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [(rng.standard_normal((12, 10, 5)) * 4).astype(np.float32) for _ in range(count)]


def _assert_reference(got, tensor) -> None:
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    assert np.allclose(got.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    assert np.array_equal(got.category_mask, want.category_mask)


@pytest.mark.parametrize("interrupted_first", [False, True])
def test_frames_in_flight_between_synchronous_frames_keep_their_buffers(
    new_processor, interruptible, interrupted_first
):
    """Frames in flight (``submit``) taking turns with ``process()`` and ``process_view()``: each keeps its
    buffer until collected, whatever the synchronous frames do (a first version of the interrupted-frame
    fix freed an uncollected buffer that a frame in flight had taken meanwhile: wrong masks)."""
    pp = new_processor(backend="gl", readback="mapped")
    a, b, s = _tensors(3)
    pp.process(s, SIZE)
    if not pp._supervisor.generation.pipeline.lends:
        pytest.skip("no GL_ARB_buffer_storage: no mapped readback")
    if interrupted_first:
        _interrupt_one_frame(pp, lambda: pp.process(s, SIZE))
    _assert_reference(pp.process(s, SIZE), s)
    first = pp.submit(a, SIZE)
    _assert_reference(pp.process(s, SIZE), s)
    second = pp.submit(b, SIZE)
    view = pp.process_view(s, SIZE)
    _assert_reference(view, s)
    view.release()
    third = pp.submit(s, SIZE)
    for pending, tensor in ((first, a), (second, b), (third, s)):
        assert pending.in_flight
        _assert_reference(pending.result(), tensor)


def test_an_interrupted_frame_leaves_frames_in_flight_the_whole_ring(new_processor, interruptible):
    """After an interrupted ``process()``, a program that only submits frames in flight still has every
    buffer for them (``MappedReadback.MAX_SLOTS`` - 1 in flight at once)."""
    from gpu_seg.gl.readback import MappedReadback

    pp = new_processor(backend="gl", readback="mapped")
    tensors = _tensors(MappedReadback.MAX_SLOTS - 1)
    pp.process(tensors[0], SIZE)
    if not pp._supervisor.generation.pipeline.lends:
        pytest.skip("no GL_ARB_buffer_storage: no mapped readback")
    _interrupt_one_frame(pp, lambda: pp.process(tensors[0], SIZE))
    pending = [pp.submit(tensor, SIZE) for tensor in tensors]
    assert all(p.in_flight for p in pending)
    for p, tensor in zip(pending, tensors, strict=True):
        _assert_reference(p.result(), tensor)


def test_an_interrupted_collection_may_be_retried_and_gives_its_buffer_back(new_processor, interruptible):
    """``PendingFrame.result()`` interrupted while it waits: a retry computes the frame (never another
    frame's masks), and the buffer is free again although the PendingFrame is still held (before: the
    retry raised ExpiredResultError and the buffer stayed taken while the frame was referenced)."""
    from gpu_seg.gl.readback import MappedReadback

    pp = new_processor(backend="gl", readback="mapped")
    tensors = _tensors(MappedReadback.MAX_SLOTS)
    pp.process(tensors[0], SIZE)
    if not pp._supervisor.generation.pipeline.lends:
        pytest.skip("no GL_ARB_buffer_storage: no mapped readback")
    interrupted = [pp.submit(tensor, SIZE) for tensor in tensors[:2]]
    for pending in interrupted:
        assert pending.in_flight
        _interrupt_one_frame(pp, pending.result)
    others = [pp.submit(tensor, SIZE) for tensor in tensors[1:]]  # the whole ring for frames in flight
    assert all(p.in_flight for p in others)
    for pending, tensor in zip(interrupted + others, tensors[:2] + tensors[1:], strict=True):
        _assert_reference(pending.result(), tensor)


def _live_egl_contexts() -> int:
    import gc

    from gpu_seg.gl.egl.contexts import EGLContext

    gc.collect()
    # type(), not isinstance(): the heap may hold dead weak proxies, on which isinstance raises
    return sum(1 for o in gc.get_objects() if type(o) is EGLContext and not o.destroyed)


def test_an_interrupted_rebuild_leaves_no_context_behind(new_processor, interruptible):
    """A frame interrupted while its new context is being made (after ``trim(release_context=True)``
    here; after a loss alike): the context that the GL thread went on to make is destroyed, not kept
    until the process exits (before: one live EGL context more per interrupt, even after ``close()``)."""
    tensor = _tensor()
    pp = new_processor(backend="gl")
    pp.process(tensor, SIZE)
    baseline = _live_egl_contexts()
    for _ in range(3):
        pp.trim(release_context=True)
        _interrupt_one_frame(pp, lambda: pp.process(tensor, SIZE))
    _assert_reference(pp.process(tensor, SIZE), tensor)
    assert _live_egl_contexts() == baseline
    pp.close()
    assert _live_egl_contexts() == baseline - 1


def test_a_close_cut_short_is_finished_by_the_next(new_processor, interruptible):
    """``close()`` interrupted while it waits for the GL thread: the next ``close()`` finishes it (before:
    it returned at once, and the GL thread was never stopped)."""
    pp = new_processor(backend="gl")
    pp.process(_tensor(), SIZE)
    gl_thread = pp._supervisor._thread
    baseline = _live_egl_contexts()
    _interrupt_one_frame(pp, pp.close)
    with pytest.raises(gpu_seg.ClosedError):
        pp.process(_tensor(), SIZE)
    pp.close()
    assert not gl_thread._thread.is_alive()
    assert _live_egl_contexts() == baseline - 1


# ----------------------------------------------------------------------------- at any point
def _from_another_thread(function, seconds: float = 5.0) -> None:
    done = threading.Event()
    worker = threading.Thread(target=lambda: (function(), done.set()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert done.is_set(), "another thread still waits"


def test_an_exception_anywhere_in_a_call_never_leaves_the_processors_lock_held():
    """The lock's ``__enter__`` was Python code: an exception from a signal handler could land
    after the lock was taken and before ``with`` could give it back, and every other thread's
    frames then waited for good (``gl_timeout`` does not cover a lock)."""
    with gpu_seg.SegmentationPostprocessor("softmax", backend="cpu") as pp:

        def attempt(point: int) -> bool:
            fired = injected_at(point, lambda: pp.stats)
            _from_another_thread(lambda: pp.stats)
            return fired

        sweep(attempt)


def test_an_exception_anywhere_in_a_frames_idle_touch_never_stops_the_idle_release():
    """``IdleWatch.touch`` (every frame with ``idle_release_after``) entered a ``Condition`` in Python:
    an exception there could keep its lock from the watch thread, and no idle release came again."""
    from gpu_seg.idle import IdleWatch

    released = threading.Event()
    watch = IdleWatch(0.02, released.set)

    def attempt(point: int) -> bool:
        released.clear()
        fired = injected_at(point, watch.touch)
        watch.touch()
        assert released.wait(5), f"no idle release after an exception at point {point}"
        return fired

    try:
        sweep(attempt)
        _from_another_thread(watch.stop)
    finally:
        watch.stop()


@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_a_collection_interrupted_at_any_point_may_be_retried(new_processor, readback):
    """``PendingFrame`` marked itself collected before the ``try`` that gives the mark back: an
    exception just after the mark (Python checks for signals right after the lock's ``__exit__``)
    made every retry raise ExpiredResultError, and an in-flight frame kept its ring buffer."""
    pp = new_processor(backend="gl", readback=readback)
    tensor = _tensor()
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)

    def attempt(point: int) -> bool:
        pending = pp.submit(tensor, SIZE)
        returned: list = []  # (a function raising at its return has handed its value back)

        def watch(frame, event, arg, raising) -> None:
            if event == "return":
                returned.append(frame.f_code.co_name)

        if not injected_at(point, pending.result, watch=watch):
            return False
        if "_take" in returned:  # the frame had been handed back: it is collected
            with pytest.raises(gpu_seg.ExpiredResultError):
                pending.result()
        else:
            result = pending.result()  # a retry computes the frame
            np.testing.assert_array_equal(result.category_mask, want.category_mask, err_msg=f"point {point}")
        del pending
        views = [pp.process_view(tensor, SIZE) for _ in range(3)]  # no ring buffer kept
        for view in views:
            view.release()
        return True

    sweep(attempt)


class _RequestTimeoutError(Exception):
    """A server's timeout raised by a signal handler: an ``Exception``, unlike KeyboardInterrupt."""


class _TimedOutError(TimeoutError):
    """The builtin ``TimeoutError`` (an ``OSError``), what most signal-based timeouts raise."""


#: What a signal handler may raise: a BaseException (KeyboardInterrupt), an Exception, an OSError.
#: The sweeps below try every third point for each, each from its own first point: together they
#: try every point (a sweep over every point for each took six minutes on the 2-core VM).
_INTERRUPTS = pytest.mark.parametrize(
    ("error", "first"),
    [(InjectedError, 1), (_RequestTimeoutError, 2), (_TimedOutError, 3)],
    ids=["base", "exception", "timeout"],
)
_STRIDE = 3


@_INTERRUPTS
def test_a_context_release_interrupted_at_any_point_leaves_no_context_behind(new_processor, error, first):
    """``trim(release_context=True)`` cut short after the processor forgot its generation and before
    the GL thread had its release: the context and its objects stayed for good (6 MB each on
    llvmpipe). An ``Exception`` there was taken for a dying driver's and swallowed."""
    tensor = _tensor()
    pp = new_processor(backend="gl", readback="direct")
    pp.process(tensor, SIZE)
    baseline = _live_egl_contexts()

    def attempt(point: int) -> bool:
        fired = injected_at(point, lambda: pp.trim(release_context=True), error=error, propagates=True)
        _assert_reference(pp.process(tensor, SIZE), tensor)
        assert _live_egl_contexts() == baseline, f"a context left behind at point {point}"
        return fired

    sweep(attempt, first, _STRIDE)


@_INTERRUPTS
def test_a_close_interrupted_at_any_point_is_finished_by_the_next(error, first):
    """``close()`` cut short: the exception reaches the caller (an ``Exception`` was logged and
    swallowed, the GL thread and its context left for good) and the next ``close()`` ends the GL
    thread and its context; an idle watch cut short while it stopped is stopped too."""
    tensor = _tensor()

    def attempt(point: int) -> bool:
        before = {t for t in threading.enumerate() if t.name.startswith("gpu_seg")}
        baseline = _live_egl_contexts()
        pp = gpu_seg.SegmentationPostprocessor(
            "softmax", backend="gl", readback="direct", idle_release_after=60
        )
        pp.process(tensor, SIZE)
        fired = injected_at(point, pp.close, error=error, propagates=True)
        pp.close()
        left = {t for t in threading.enumerate() if t.name.startswith("gpu_seg")} - before
        assert not [t.name for t in left if t.is_alive()], f"threads left at point {point}"  # (joined)
        assert _live_egl_contexts() == baseline, f"a context left behind at point {point}"
        return fired

    sweep(attempt, first, 2 * _STRIDE)  # (a processor per point: every sixth, three apart per error type)


@_INTERRUPTS
def test_a_rebuild_interrupted_at_any_point_leaves_no_context_behind(new_processor, error, first):
    """A frame that makes a new context generation (after a release here; after a loss alike) cut
    short between the context's creation and the generation's storing: the context stayed for
    good (3 MB each on llvmpipe). A TimeoutError in the wait for the new context was taken for
    "GL unavailable": the frame went to the CPU (auto) or raised GLUnavailableError (gl)."""
    tensor = _tensor()
    pp = new_processor(backend="gl", readback="direct")
    pp.process(tensor, SIZE)
    baseline = _live_egl_contexts()

    def attempt(point: int) -> bool:
        pp.trim(release_context=True)
        fired = injected_at(point, lambda: pp.process(tensor, SIZE), error=error, propagates=True)
        _assert_reference(pp.process(tensor, SIZE), tensor)
        assert _live_egl_contexts() == baseline, f"a context left behind at point {point}"
        return fired

    sweep(attempt, first, _STRIDE)
