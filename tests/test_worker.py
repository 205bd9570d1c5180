"""The GL thread: order of calls, errors carried back, and a hung call reported as a context loss."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from gpu_seg.errors import ContextLostError
from gpu_seg.gl.worker import GLThread


@pytest.fixture
def gl_thread():
    thread = GLThread("gpu_seg-test")
    yield thread
    thread.stop(timeout=1.0)


def test_calls_run_on_the_thread_and_errors_come_back(gl_thread: GLThread) -> None:
    assert gl_thread.call(threading.get_ident) == gl_thread.ident
    with pytest.raises(ZeroDivisionError):
        gl_thread.call(lambda: 1 / 0)
    assert gl_thread.call(lambda: "still serving") == "still serving"


def test_a_call_past_its_timeout_is_a_loss_and_abandons_the_thread(gl_thread: GLThread) -> None:
    release = threading.Event()
    with pytest.raises(ContextLostError) as info:
        gl_thread.call(release.wait, timeout=0.2)
    release.set()
    assert info.value.reason == "gl call timed out"
    assert not gl_thread.usable
    with pytest.raises(ContextLostError):
        gl_thread.call(lambda: None)


class _Py310FuturesTimeoutError(Exception):
    """``concurrent.futures.TimeoutError`` as Python 3.10 defines it: not the builtin TimeoutError."""


def test_the_timeout_is_caught_where_futures_timeout_is_not_the_builtin(
    gl_thread: GLThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Python 3.11, ``Future.result(timeout)`` raises ``concurrent.futures.TimeoutError``,
    a class of its own; catching the builtin ``TimeoutError`` let the raw timeout escape
    ``process()`` with no loss counted. Only 3.11+ is installed here, so the 3.10 class layout is
    recreated: ``Future.result`` raises what ``concurrent.futures._base.TimeoutError`` names.
    """
    monkeypatch.setattr(concurrent.futures._base, "TimeoutError", _Py310FuturesTimeoutError)
    monkeypatch.setattr(concurrent.futures, "TimeoutError", _Py310FuturesTimeoutError)
    release = threading.Event()
    with pytest.raises(ContextLostError):
        gl_thread.call(release.wait, timeout=0.2)
    release.set()
    assert not gl_thread.usable


def test_a_new_thread_with_the_ident_of_a_finished_gl_thread_is_not_it() -> None:
    """Thread idents are reused once a thread ends (glibc hands its stack to the next one): a GL
    thread abandoned after a timeout must not take a later thread for itself (the processor's lock
    would then refuse that thread as if it called from inside run_gl)."""
    gl_thread = GLThread("gpu_seg-test")
    old = gl_thread.ident
    gl_thread.stop(timeout=5.0)
    seen = []

    def check() -> None:
        if threading.get_ident() == old:
            seen.append(gl_thread.is_current_thread())

    for _ in range(50):
        thread = threading.Thread(target=check)
        thread.start()
        thread.join()
        if seen:
            break
    if not seen:
        pytest.skip("no new thread got the finished thread's ident here (not glibc?)")
    assert seen == [False]
