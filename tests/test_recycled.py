"""Recycled result memory (:mod:`gpu_seg.recycled`): an owned result array is handed out again
only once nothing references it or anything derived from it; what is kept is bounded; arrays of
an attempt that did not end normally are never handed out again. Then the processors: results
come from recycled memory on the CPU path and on every GL readback (a real EGL context), a held
result is never written by a later frame, and a real context loss forgets the lost attempt's
arrays.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
import weakref

import numpy as np
import pytest

import gpu_seg
from gpu_seg import InputError, reference_postprocess
from gpu_seg.gl import egl
from gpu_seg.recycled import RecycledArrays

SHAPE = (3, 64, 64)  # 48 KiB of float32


def _pool(**options) -> RecycledArrays:
    options.setdefault("min_bytes", 0)
    return RecycledArrays(**options)


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


# ----------------------------------------------------------------------------- the pool alone
def test_an_array_nobody_references_is_handed_out_again():
    pool = _pool()
    first = pool.take(SHAPE, np.float32)
    address = _address(first)
    del first
    second = pool.take(SHAPE, np.float32)
    assert _address(second) == address and pool.reused == 1 and pool.allocated == 1
    assert second.shape == SHAPE and second.dtype == np.float32 and second.flags.c_contiguous


HOLDERS = {
    "the array": lambda a: a,
    "a view": lambda a: a[1],
    "a view of a view": lambda a: a[1][2:, 3:],
    "a reshape": lambda a: a.reshape(-1),
    "a transpose": lambda a: a.T,
    "a memoryview": lambda a: memoryview(a),
    "np.frombuffer": lambda a: np.frombuffer(a, np.uint8),
    "a ctypes pointer": lambda a: a.ctypes.data_as(ctypes.c_void_p),
    "a read-only view": lambda a: _read_only(a[0]),
}


def _read_only(view: np.ndarray) -> np.ndarray:
    view.flags.writeable = False
    return view


@pytest.mark.parametrize("holder", HOLDERS, ids=list(HOLDERS))
def test_memory_something_still_references_is_never_handed_out(holder):
    pool = _pool()
    first = pool.take(SHAPE, np.float32)
    first[...] = 7.0
    held = HOLDERS[holder](first)
    address = _address(first)
    del first
    for _ in range(3):
        other = pool.take(SHAPE, np.float32)
        assert _address(other) != address
        other[...] = -1.0
    data = np.frombuffer(
        (ctypes.c_char * (np.prod(SHAPE) * 4)).from_address(address), np.float32
    )  # the held memory, read by address while ``held`` keeps it alive
    assert (data == 7.0).all()
    del held, other, data
    gc.collect()
    assert _address(pool.take(SHAPE, np.float32)) == address  # let go of: used again


def test_a_read_only_array_comes_back_writeable():
    pool = _pool()
    first = pool.take(SHAPE, np.float32)
    first.flags.writeable = False  # as a MaskView makes its arrays
    del first
    again = pool.take(SHAPE, np.float32)
    assert again.flags.writeable
    again[...] = 1.0


def test_shapes_and_dtypes_are_kept_apart():
    pool = _pool()
    floats = pool.take((4, 1024), np.float32)
    del floats
    same_bytes = pool.take((16, 1024), np.uint8)
    other_shape = pool.take((1024, 4), np.float32)
    assert same_bytes.dtype == np.uint8 and same_bytes.shape == (16, 1024)
    assert other_shape.shape == (1024, 4) and pool.reused == 0


def test_what_is_kept_is_bounded():
    one = int(np.prod(SHAPE)) * 4
    pool = _pool(max_bytes=3 * one)
    held = [pool.take(SHAPE, np.float32) for _ in range(6)]  # all held: six different arrays
    assert len({_address(a) for a in held}) == 6
    assert pool.kept_bytes <= 3 * one and len(pool) <= 3
    pool = _pool()
    held = [pool.take(SHAPE, np.float32) for _ in range(RecycledArrays.MAX_PER_SHAPE + 3)]
    assert len(pool) == RecycledArrays.MAX_PER_SHAPE


def test_small_or_oversized_arrays_are_never_kept():
    pool = RecycledArrays(max_bytes=1 << 20, min_bytes=1 << 16)
    small = pool.take((100,), np.float32)
    large = pool.take((2, 1 << 19), np.float32)
    assert len(pool) == 0 and pool.kept_bytes == 0
    del small, large
    assert RecycledArrays(0).take(SHAPE, np.float32) is not None  # 0: nothing kept, still works


def test_only_the_shapes_used_last_are_kept():
    pool = _pool()
    for width in range(10, 40):  # a new size every frame, each dropped: nothing piles up
        pool.take((3, 16, width), np.float32)
        pool.take((16, width), np.uint8)
    assert len(pool) == RecycledArrays.MAX_SHAPES
    assert pool.kept_bytes == 3 * 16 * 39 * 4 + 16 * 39


def test_the_least_recently_used_shape_makes_room():
    one = int(np.prod(SHAPE)) * 4
    pool = _pool(max_bytes=2 * one)
    a = pool.take(SHAPE, np.float32)
    b = pool.take((3, 32, 128), np.float32)
    del a, b
    pool.take((3, 32, 128), np.float32)  # used: (3, 32, 128) is the most recent shape now
    c = pool.take((3, 128, 32), np.float32)  # a third shape: SHAPE, the least recent, makes room
    assert pool.kept_bytes == 2 * one and c.shape == (3, 128, 32)
    assert pool.take(SHAPE, np.float32).shape == SHAPE and pool.reused == 1


def test_forgotten_arrays_are_never_handed_out_again():
    pool = _pool()
    first = pool.take(SHAPE, np.float32)
    gone = weakref.ref(first)
    pool.forget(first, None)
    del first
    assert gone() is None and len(pool) == 0 and pool.kept_bytes == 0


def test_release_drops_what_is_kept_and_leaves_held_arrays_alone():
    pool = _pool()
    held = pool.take(SHAPE, np.float32)
    held[...] = 3.0
    dropped = weakref.ref(pool.take((2, 64, 64), np.float32))
    assert pool.release() > 0 and pool.kept_bytes == 0 and len(pool) == 0
    assert dropped() is None and (held == 3.0).all()
    assert _address(pool.take(SHAPE, np.float32)) != _address(held)


def test_threads_never_share_an_array():
    """Four threads ask at once for the one free array, with the window between the check and the
    hand-out widened: one gets it, the others get arrays of their own."""
    pool = _pool()
    free = pool._free

    def slow_free(kept, index):
        answer = free(kept, index)
        time.sleep(0.01)
        return answer

    pool._free = slow_free
    first = pool.take((4, 256), np.float32)
    del first
    barrier = threading.Barrier(4)
    taken = []

    def worker() -> None:
        barrier.wait()
        taken.append(pool.take((4, 256), np.float32))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({_address(a) for a in taken}) == 4 and pool.reused == 1


def test_an_array_with_weak_references_is_let_go_of_not_reused():
    """A weak reference does not count as a holder, so a recycled array would change under it:
    the array is dropped instead, and the weak reference dies as it would with ``np.empty``."""
    pool = _pool()
    first = pool.take(SHAPE, np.float32)
    first[...] = 5.0
    ref = weakref.ref(first)
    del first
    assert ref() is not None  # kept by the pool until the next take
    second = pool.take(SHAPE, np.float32)
    second[...] = -1.0
    assert ref() is None and pool.reused == 0 and len(pool) == 1


@pytest.mark.parametrize("how", ["release", "forget", "weakref at take", "new shapes"])
def test_arrays_are_freed_outside_the_lock(how):
    """A weak-reference callback that calls back into the set while the set lets go of an array."""
    pool = _pool()
    array = pool.take(SHAPE, np.float32)
    called = []
    weakref.finalize(array, lambda: called.append(pool.take((2, 64, 64), np.float32)))
    if how == "forget":
        pool.forget(array)
    del array

    def let_go() -> None:
        if how == "release":
            pool.release()
        elif how == "weakref at take":
            pool.take(SHAPE, np.float32)
        elif how == "new shapes":
            for width in (10, 11, 12):
                pool.take((3, width), np.float32)

    thread = threading.Thread(target=let_go, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "deadlock: an array was freed under the lock"
    assert len(called) == 1


# ----------------------------------------------------------------------------- processors
def _tensor(seed: int, shape=(16, 12, 3)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)


SIZE = (330, 280)  # 3 float32 masks: 1.06 MiB, above the size kept by default


def _check(result, tensor) -> None:
    want = reference_postprocess(tensor, "softmax", SIZE)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


PATHS = {
    "cpu": {"backend": "cpu"},
    "gl-direct": {"backend": "gl", "readback": "direct"},
    "gl-mapped": {"backend": "gl", "readback": "mapped"},
    "gl-mapped-streamed": {"backend": "gl", "readback": "mapped"},
    "gl-compute": {"backend": "gl", "readback": "mapped", "gl_passes": "compute"},
}


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_results_reuse_dropped_memory_and_never_touch_held_results(new_processor, path):
    """A different tensor every frame (a recycled array that a frame failed to overwrite would
    show the frame before); the category mask recycled too (no size floor)."""
    pp = new_processor(**PATHS[path])
    pp._arrays.min_bytes = 0
    if path != "cpu":
        pp.process(_tensor(0), SIZE)
        pipeline = pp._supervisor.generation.pipeline
        pipeline.stream_collect = path == "gl-mapped-streamed"
        pipeline.category_shortcut = path != "gl-compute"
    first_tensor = _tensor(1)
    held = pp.process(first_tensor, SIZE)
    held_bytes = held.confidence_masks.tobytes(), held.category_mask.tobytes()
    addresses = set()
    for seed in range(10, 15):
        tensor = _tensor(seed)
        result = pp.process(tensor, SIZE)
        addresses.add((_address(result.confidence_masks), _address(result.category_mask)))
        _check(result, tensor)
        del result
    assert len(addresses) == 1  # dropped each time: the same memory every frame
    held_addresses = (_address(held.confidence_masks), _address(held.category_mask))
    assert not set(held_addresses) & {a for pair in addresses for a in pair}
    assert (held.confidence_masks.tobytes(), held.category_mask.tobytes()) == held_bytes
    _check(held, first_tensor)
    assert pp.stats["recycled_arrays"] >= 8 and pp.stats["recycled_bytes_kept"] > 0


def test_views_of_recycled_memory_do_not_make_it_read_only(new_processor):
    pp = new_processor(backend="cpu")
    tensor = _tensor(3)
    view = pp.process_view(tensor, SIZE)
    assert not view.confidence_masks.flags.writeable
    del view
    result = pp.process(tensor, SIZE)
    assert pp.stats["recycled_arrays"] == 1 and result.confidence_masks.flags.writeable
    _check(result, tensor)


def test_recycle_bytes_zero_allocates_every_result(new_processor):
    pp = new_processor(backend="cpu", recycle_bytes=0)
    tensor = _tensor(4)
    for _ in range(3):
        pp.process(tensor, SIZE)
    assert pp.stats["recycled_arrays"] == 0 and pp.stats["recycled_bytes_kept"] == 0
    assert pp.stats["recycling_off"] is None  # off by choice, not because this Python cannot tell


def test_trim_lets_go_of_the_kept_memory(new_processor):
    pp = new_processor(backend="auto")
    pp.process(_tensor(5), SIZE)
    assert pp.stats["recycled_bytes_kept"] > 0
    pp.trim()
    assert pp.stats["recycled_bytes_kept"] == 0


@pytest.mark.parametrize("value", [-1, 1.5, True, "512M", None])
def test_bad_recycle_bytes_is_an_input_error(value):
    with pytest.raises(InputError, match="recycle_bytes"):
        gpu_seg.SegmentationPostprocessor("softmax", backend="cpu", recycle_bytes=value)


def test_a_context_destroyed_under_a_frame_forgets_its_arrays(new_processor):
    """A real eglDestroyContext on the GL thread while a direct-readback frame reads into its arrays:
    the frame is recomputed into other arrays, and the lost attempt's arrays are never handed out
    again (a driver that hangs instead of failing may still write into them)."""
    events = []
    pp = new_processor(backend="gl", readback="direct", on_event=events.append)
    tensor = _tensor(6)
    pp.process(tensor, SIZE)
    session = pp._supervisor.generation.session
    pipeline = pp._supervisor.generation.pipeline
    attempts = []
    original = pipeline.process

    def destroyed_first(frame, confidence, category):
        attempts.append(weakref.ref(confidence))
        session.egl_context.release_current()  # on the GL thread: the context is current here
        egl.library().eglDestroyContext(session.egl_context.display.handle, session.egl_context.handle)
        return original(frame, confidence, category)

    pipeline.process = destroyed_first
    result = pp.process(tensor, SIZE)
    assert [e.kind.value for e in events] == ["context_lost", "rebuilt"]
    _check(result, tensor)
    del result
    gc.collect()
    assert len(attempts) == 1 and attempts[0]() is None  # forgotten: nothing keeps it
    again = pp.process(tensor, SIZE)
    _check(again, tensor)


def test_a_context_destroyed_under_a_streamed_frame_forgets_its_arrays(new_processor):
    from gpu_seg.gl import readback as readback_module

    events = []
    pp = new_processor(backend="gl", readback="mapped", on_event=events.append)
    pp.process(_tensor(7), SIZE)
    session = pp._supervisor.generation.session
    pipeline = pp._supervisor.generation.pipeline
    pipeline.stream_collect = True
    attempts = []
    original = pipeline.stream_into

    def destroyed_first(confidence, category, ticket=None):
        attempts.append(weakref.ref(confidence))
        session.egl_context.release_current()
        egl.library().eglDestroyContext(session.egl_context.display.handle, session.egl_context.handle)
        return original(confidence, category, ticket)

    pipeline.stream_into = destroyed_first
    assert readback_module.STREAM_CHUNK_BYTES > 0
    tensor = _tensor(8)
    result = pp.process(tensor, SIZE)
    assert [e.kind.value for e in events] == ["context_lost", "rebuilt"]
    _check(result, tensor)
    del result
    gc.collect()
    assert len(attempts) == 1 and attempts[0]() is None


@pytest.mark.parametrize("path", ["direct", "streamed"])
def test_a_hung_frame_never_gives_its_arrays_back(new_processor, path):
    """A GL call that hangs past ``gl_timeout`` and writes into its arrays when it finally returns
    (as a hung driver may): the frame is recomputed into other memory, later frames are right, and
    the hung attempt's arrays are never handed out again."""
    pp = new_processor(backend="gl", readback=path if path == "direct" else "mapped", gl_timeout=1.0)
    pp.process(_tensor(0), SIZE)
    pipeline = pp._supervisor.generation.pipeline
    release, finished = threading.Event(), threading.Event()
    stuck = {}

    def hang(confidence) -> None:
        stuck["ref"], stuck["address"] = weakref.ref(confidence), _address(confidence)
        release.wait(10)
        confidence[...] = -1.0  # the late write
        finished.set()

    if path == "direct":
        pipeline.process = lambda frame, confidence, category: hang(confidence)
    else:
        pipeline.stream_collect = True
        pipeline.stream_into = lambda confidence, category, ticket=None: hang(confidence)
    tensor = _tensor(1)
    result = pp.process(tensor, SIZE)
    assert _address(result.confidence_masks) != stuck["address"]
    _check(result, tensor)
    release.set()
    assert finished.wait(10)
    for seed in range(2, 6):
        tensor = _tensor(seed)
        later = pp.process(tensor, SIZE)
        _check(later, tensor)
        del later
    time.sleep(0.1)
    gc.collect()
    _check(result, _tensor(1))  # the held result was never written by the hung call
    assert stuck["ref"]() is None  # forgotten: the set does not keep it


def test_recycling_is_off_where_reference_counts_cannot_tell(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    pool = _pool()
    assert pool.disabled and "free-threaded" in pool.disabled and pool.max_bytes == 0
    first = pool.take(SHAPE, np.float32)
    del first
    pool.take(SHAPE, np.float32)
    assert pool.reused == 0 and len(pool) == 0
    monkeypatch.delattr(sys, "getrefcount")
    assert "getrefcount" in _pool().disabled
    monkeypatch.undo()
    assert _pool().disabled is None


def test_the_idle_release_lets_go_of_recycled_memory_on_the_cpu_backend_too(new_processor):
    gpu_seg.cpu.warm_up()  # a first CPU frame waits for it: longer than the idle time below
    pp = new_processor(backend="cpu", idle_release_after=0.5)
    pp.process(_tensor(9), SIZE)
    assert pp.stats["recycled_bytes_kept"] > 0
    deadline = time.monotonic() + 10
    while pp.stats["recycled_bytes_kept"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pp.stats["recycled_bytes_kept"] == 0
