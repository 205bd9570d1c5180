"""Frames from several threads, and results held across frames: found by a lifecycle fuzz.

Before their fixes: on the direct readback (llvmpipe's default) a mask without a preallocated array
was the processor's staging array, handed out and then overwritten by the next frame; two threads
with preallocated arrays got each other's masks (the staging pair was given back before it was
copied); ``PendingFrame.view()`` of a frame submitted with arrays raised AssertionError; a resident
frame's lease could outlive a later frame that released its textures; and a long burst of losses
overflowed the backoff's arithmetic.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import gpu_seg
from gpu_seg import ExpiredResultError, reference_postprocess
from gpu_seg.resilience import Backoff

SIZE = (40, 30)


def _tensor(seed: int, shape=(16, 16, 4)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 5).astype(np.float32)


@pytest.mark.parametrize("readback", ["direct", "mapped"])
@pytest.mark.parametrize("given", ["confidence", "category"])
def test_a_mask_without_a_preallocated_array_is_not_overwritten_by_the_next_frame(readback, given):
    a, b = _tensor(1), _tensor(2)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback=readback) as pp:

        def outputs():
            if given == "confidence":
                return {"confidence_out": np.empty((4, SIZE[1], SIZE[0]), np.float32)}
            return {"category_out": np.empty((SIZE[1], SIZE[0]), np.uint8)}

        first = pp.process(a, SIZE, **outputs())
        pp.process(b, SIZE, **outputs())
        expected = reference_postprocess(a, "softmax", SIZE)
        np.testing.assert_array_equal(first.category_mask, expected.category_mask)
        np.testing.assert_allclose(first.confidence_masks, expected.confidence_masks, atol=2e-6)


@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_threads_with_their_own_arrays_get_their_own_masks(readback):
    tensors = [_tensor(3), _tensor(4)]
    expected = [reference_postprocess(t, "softmax", SIZE) for t in tensors]
    wrong: list[tuple] = []
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback=readback) as pp:

        def worker(k: int) -> None:
            confidence = np.empty((4, SIZE[1], SIZE[0]), np.float32)
            category = np.empty((SIZE[1], SIZE[0]), np.uint8)
            for i in range(150):
                result = pp.process(tensors[k], SIZE, confidence_out=confidence, category_out=category)
                bad_category = int((result.category_mask != expected[k].category_mask).sum())
                error = float(np.abs(result.confidence_masks - expected[k].confidence_masks).max())
                if bad_category or error > 2e-5:
                    wrong.append((k, i, bad_category, error))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not wrong, f"{len(wrong)} of 300 frames had another thread's masks, e.g. {wrong[:3]}"


def test_the_view_of_a_frame_submitted_with_arrays_is_a_mask_view():
    tensor = _tensor(5)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback="mapped") as pp:
        confidence = np.empty((4, SIZE[1], SIZE[0]), np.float32)
        category = np.empty((SIZE[1], SIZE[0]), np.uint8)
        view = pp.submit(tensor, SIZE, confidence_out=confidence, category_out=category).view()
        assert isinstance(view, gpu_seg.MaskView) and not view.zero_copy
        expected = reference_postprocess(tensor, "softmax", SIZE)
        np.testing.assert_array_equal(view.category_mask, expected.category_mask)
        assert view.category_mask.base is category  # read-only views of the caller's arrays, as documented
        assert view.confidence_masks.base is confidence and category.flags.writeable


def test_a_resident_lease_ends_with_any_later_frame_even_one_prepared_before_it():
    """Thread A reads its resident masks a moment after making them while thread B runs frames of
    growing sizes (each releases the smaller output slots, A's textures among them): A's reads
    give A's masks or ExpiredResultError, never a released texture."""
    size = (40, 30)
    mine, other = _tensor(6), _tensor(7)
    expected = reference_postprocess(mine, "softmax", size).category_mask
    stop = threading.Event()
    outcomes: dict[str, int] = {}
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:

        def reader() -> None:
            try:
                for _ in range(1500):
                    masks = pp.process_resident(mine, size)
                    time.sleep(0.0003)
                    try:
                        category = masks.read_category()
                    except ExpiredResultError:
                        key = "expired"
                    except Exception as exc:
                        key = f"{type(exc).__name__}: {exc}"
                    else:
                        key = "ok" if np.array_equal(category, expected) else "wrong masks"
                    outcomes[key] = outcomes.get(key, 0) + 1
            finally:
                stop.set()

        def writer() -> None:
            pauses = np.random.default_rng(8).uniform(0, 0.002, 100_000)
            k = 0
            while not stop.is_set():
                k = k % 119 + 1
                pp.process(other, (size[0] + k, size[1] + k))
                time.sleep(pauses[k])

        threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert set(outcomes) <= {"ok", "expired"}, outcomes


def test_a_long_burst_of_losses_keeps_the_backoff_at_its_cap():
    backoff = Backoff()
    assert backoff.delay(2000) == backoff.cap
    assert Backoff(factor=1e300).delay(5) == Backoff().cap
    assert Backoff(cap=1e9).delay(5000) == 1e9
    assert Backoff(base=0.0, factor=2.0).delay(5000) == 0.0


@pytest.mark.parametrize("readback", ["direct", "mapped"])
def test_collecting_a_frame_in_flight_leaves_a_later_resident_lease_alone(readback):
    """The lease ends with the next frame computed, not with the collection of one submitted before
    it (which computes nothing on GL unless it is stale)."""
    tensor = _tensor(9)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback=readback) as pp:
        pending = pp.submit(tensor, SIZE)
        masks = pp.process_resident(tensor, SIZE)
        pending.result()
        expected = reference_postprocess(tensor, "softmax", SIZE)
        np.testing.assert_array_equal(masks.read_category(), expected.category_mask)
        pending = pp.submit(tensor, SIZE)
        masks = pp.process_resident(tensor, SIZE)
        pp.trim()  # ends the lease, and makes the flight stale: its collection recomputes
        pending.result()
        with pytest.raises(ExpiredResultError):
            masks.read_category()
