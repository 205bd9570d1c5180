"""Processors dropped without ``close()``: when they are garbage-collected, what they hold is released.

Before, each one kept its GL thread, its EGL context (moderngl contexts are released only explicitly)
and, with ``idle_release_after``, its idle thread, which also kept the processor itself alive: an
application that made a processor per session and forgot ``close()`` gained a thread and a context per
session, for good. A constructor that raised (no GL with ``backend="gl"``) left its GL thread behind.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import gpu_seg
from gpu_seg.gl.egl.contexts import EGLContext


def _held() -> tuple[int, int]:
    """(gpu_seg threads alive, EGL contexts not destroyed)."""
    gc.collect()
    threads = sum(1 for t in threading.enumerate() if t.name.startswith(("gpu_seg-gl", "gpu_seg-idle")))
    # type(), not isinstance(): the heap may hold dead weak proxies, on which isinstance raises
    contexts = sum(1 for o in gc.get_objects() if type(o) is EGLContext and not o.destroyed)
    return threads, contexts


@pytest.mark.parametrize("options", [{}, {"idle_release_after": 30.0}], ids=["plain", "idle watch"])
def test_a_processor_dropped_without_close_releases_its_thread_and_context(options):
    tensor = (np.random.default_rng(2).standard_normal((12, 10, 4)) * 3).astype(np.float32)
    before = _held()
    for _ in range(3):
        pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl", **options)
        view = pp.process_view(tensor, (40, 32))  # a keeper context too, while the view lives
        pp.process(tensor, (40, 32))
        assert _held()[0] > before[0]
        del pp
        gc.collect()
        want = gpu_seg.reference_postprocess(tensor, "softmax", (40, 32))
        assert np.array_equal(view.category_mask, want.category_mask)  # views outlive it, as after close()
        del view
    assert _held() == before


def test_a_constructor_that_raises_leaves_no_thread_behind():
    before = _held()
    for _ in range(3):
        with pytest.raises(gpu_seg.GLUnavailableError):
            gpu_seg.SegmentationPostprocessor("softmax", backend="gl", device_index=10_000)
    assert _held() == before


class _App:
    """An application that keeps its processor and hears its events (the usual shape)."""

    def __init__(self) -> None:
        self.events: list[gpu_seg.Event] = []
        self.pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl", on_event=self.on_event)

    def on_event(self, event: gpu_seg.Event) -> None:
        self.events.append(event)


def test_a_processor_whose_event_callback_refers_to_it_is_collected_too():
    """``on_event`` as a bound method of the object that holds the processor (or a closure over the
    processor): a reference cycle through the callback, which the garbage collector breaks; what
    releases the processor's GL side must not hold the callback (a first version did: it kept the
    processor, its thread and its context for good)."""
    tensor = (np.random.default_rng(2).standard_normal((12, 10, 4)) * 3).astype(np.float32)
    before = _held()
    for _ in range(2):
        app = _App()
        app.pp.process(tensor, (40, 32))
        pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl")
        pp.on_event = lambda event, pp=pp: pp.stats
        pp.process(tensor, (40, 32))
        del app, pp
    assert _held() == before
