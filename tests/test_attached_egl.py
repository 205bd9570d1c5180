"""Attached processors on application contexts made with moderngl's EGL backend (no X server).

Each test runs on a thread of its own: an application context is current on the thread that made
it, and the processor works on that thread, so the test thread's own contexts are left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import moderngl
import numpy as np
import pytest

import gpu_seg
from gpu_seg import GLTensor

SIZE = (12, 10)


def _on_a_thread(function: Callable[[], None]) -> None:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the test's thread did not finish"
    if failure:
        raise failure[0]


def _tensor(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((8, 8, 4)).astype(np.float32)


def _app_context() -> moderngl.Context:
    return moderngl.create_context(standalone=True, backend="egl", require=330)  # current from now on


def test_a_buffer_of_another_context_is_refused_when_the_context_was_named():
    def run() -> None:
        wanted, unrelated = _tensor(1), _tensor(2)
        other = _app_context()
        foreign = other.buffer(wanted.tobytes())
        app = _app_context()
        namesake = app.buffer(unrelated.tobytes())  # the same GL name as `foreign`, in the app's context
        assert namesake.glo == foreign.glo
        try:
            with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context=app) as pp:
                with pytest.raises(gpu_seg.InputError, match="another") as caught:
                    pp.process_resident(GLTensor(foreign, wanted.shape), SIZE)
                assert caught.value.argument == "tensor"
                masks = pp.process_resident(GLTensor(namesake, unrelated.shape), SIZE)  # its own: fine
                want = gpu_seg.reference_postprocess(unrelated, "softmax", SIZE).category_mask
                np.testing.assert_array_equal(masks.read_category(), want)
        finally:
            app.release()
            other.release()

    _on_a_thread(run)


@pytest.mark.parametrize("backend", ["auto", "gl"])
def test_an_application_context_released_under_the_processor_is_a_loss(backend):
    def run() -> None:
        tensor = _tensor(3)
        app = _app_context()
        with gpu_seg.SegmentationPostprocessor("softmax", backend=backend, context=app) as pp:
            assert pp.process(tensor, SIZE).backend == "gl"
            app.release()  # the application ends its context
            if backend == "gl":
                with pytest.raises(gpu_seg.ContextLostError):
                    pp.process(tensor, SIZE)
                with pytest.raises(gpu_seg.ContextLostError):
                    pp.run_gl(lambda ctx: None)
            else:
                result = pp.process(tensor, SIZE)
                assert result.backend == "cpu"
                want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
                np.testing.assert_array_equal(result.category_mask, want.category_mask)
            assert pp.stats["context_losses"] == 1
            pp.trim()
            with pytest.raises(gpu_seg.InputError, match="released") as caught:
                pp.attach(app)
            assert caught.value.argument == "context"
            fresh = _app_context()
            try:
                pp.attach(fresh)
                assert pp.process(tensor, SIZE).backend == "gl"
            finally:
                pp.close()
                fresh.release()

    _on_a_thread(run)


def test_a_released_application_context_is_refused_at_construction():
    def run() -> None:
        app = _app_context()
        app.release()
        with pytest.raises(gpu_seg.InputError, match="released") as caught:
            gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context=app)
        assert caught.value.argument == "context"

    _on_a_thread(run)


@pytest.mark.parametrize("start", ["owned", "attached"])
def test_attach_ends_the_lease_of_resident_results(start):
    def run() -> None:
        tensor = _tensor(4)
        first = _app_context()
        pp = gpu_seg.SegmentationPostprocessor(
            "softmax", backend="gl", context=None if start == "owned" else first
        )
        second = None
        try:
            masks = pp.process_resident(tensor, SIZE)
            assert masks.valid
            second = _app_context()
            pp.attach(second)
            assert not masks.valid
            for access in (
                lambda: masks.category_texture,
                lambda: masks.confidence_textures,
                masks.read_category,
            ):
                with pytest.raises(gpu_seg.ExpiredResultError, match="attach"):
                    access()
        finally:
            pp.close()
            if second is not None:
                second.release()
            first.release()

    _on_a_thread(run)


def test_the_egl_device_variable_is_not_read_for_an_application_context(monkeypatch):
    """``GPU_SEG_EGL_DEVICE`` chooses the device of an owned context; an attached processor uses
    the application's and must not be refused for a bad value."""
    monkeypatch.setenv("GPU_SEG_EGL_DEVICE", "garbage")

    def run() -> None:
        app = _app_context()
        try:
            with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context=app) as pp:
                assert pp.process(_tensor(5), SIZE).backend == "gl"
        finally:
            app.release()

    _on_a_thread(run)
