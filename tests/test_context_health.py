"""The health check of gpu_seg's EGL contexts and owned sessions, on real EGL contexts (no mocks).

NVIDIA's EGL hands a new context the address of one destroyed just before, so a session whose
context was destroyed from outside can find its old ``EGLContext`` handle naming someone else's
live context: ``eglQueryContext`` succeeds and ``eglMakeCurrent`` makes the stranger current.
Mesa gives new contexts new addresses, so these tests recreate that state by pointing the old
``EGLContext`` object at the new handle, which is exactly what the NVIDIA driver leaves behind.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pytest

from gpu_seg.errors import ContextLostError
from gpu_seg.gl import egl
from gpu_seg.gl.constants import GL_LOSE_CONTEXT_ON_RESET, GL_NO_ERROR, GL_RESET_NOTIFICATION_STRATEGY
from gpu_seg.gl.session import OwnedSession

moderngl = pytest.importorskip("moderngl")


@pytest.fixture
def display():
    """The shared display; what was current on this thread is current again after the test."""
    with egl.preserve_current():
        yield egl.open_display()


@pytest.fixture
def session():
    made = OwnedSession.create(generation=1)
    yield made
    made.abandon()


# ------------------------------------------------------------------------------------- EGL layer


@pytest.mark.parametrize("identity", ["label", "content"])
def test_a_recycled_handle_fools_the_handle_checks_not_the_sentinel(
    display: egl.Display, identity: str
) -> None:
    ours = egl.create_context(display)
    ours.make_current()
    health = egl.ContextHealth(ours, identity=identity)
    assert health.identity == identity
    assert health.lost_reason() is None
    ours.release_current()
    assert egl.library().eglDestroyContext(display.handle, ours.handle)
    stranger = egl.create_context(display)
    ours.handle = stranger.handle  # what NVIDIA does by itself: the same address again
    stranger.make_current()
    mgl = moderngl.create_context(standalone=True, require=330, context=stranger.loader())
    try:
        # The stranger has a buffer under the sentinel's name (names start at 1 in every context).
        buffers = [mgl.buffer(bytes(32)) for _ in range(health.sentinel_name)]
        assert buffers[-1].glo == health.sentinel_name
        # The handle-only checks say "alive"; the sentinel says it is someone else's context.
        assert ours.is_valid() and ours.is_current()
        reason = health.lost_reason()
        assert reason is not None and "another context" in reason
        assert ours.disowned
        assert mgl.error == "GL_NO_ERROR"  # the check raised no GL error in the stranger
        ours.destroy()  # what abandoning the session does: it must not destroy the stranger
        assert stranger.is_valid() and stranger.is_current()
    finally:
        mgl.release()


def test_a_disowned_context_left_to_the_garbage_collector_spares_the_handle(display: egl.Display) -> None:
    stranger = egl.create_context(display)
    # Our object as NVIDIA leaves it: created with the address that the stranger now has.
    ours = egl.EGLContext(display, stranger.handle, stranger.config, 0, stranger.gl_version, False, False)
    ours.disown()
    del ours  # no destroy(): the finalizer runs now and must leave the stranger alone
    gc.collect()
    try:
        assert stranger.is_valid()
    finally:
        stranger.destroy()


def test_a_destroyed_context_is_reported_and_a_healthy_one_is_not(display: egl.Display) -> None:
    context = egl.create_context(display)
    context.make_current()
    health = egl.ContextHealth(context)
    assert health.lost_reason() is None
    context.destroy()
    assert health.lost_reason() == "the EGL context was destroyed"
    assert not context.disowned  # destroyed, not recycled: nothing to protect


def test_the_health_check_costs_microseconds(display: egl.Display, record_property: Any) -> None:
    """It runs after every frame: measure it beside the handle-only check it extends."""
    context = egl.create_context(display)
    context.make_current()
    try:
        health = egl.ContextHealth(context, reset_poll_interval=0.005)
        rounds = 2000

        def per_call_us(check) -> float:
            start = time.perf_counter()
            for _ in range(rounds):
                check()
            return (time.perf_counter() - start) / rounds * 1e6

        def handle_only() -> None:
            assert context.is_valid() and context.is_current()
            assert context.gl_error() == GL_NO_ERROR

        def full() -> None:
            assert health.lost_reason() is None
            assert context.gl_error() == GL_NO_ERROR

        handle_us = min(per_call_us(handle_only) for _ in range(3))
        full_us = min(per_call_us(full) for _ in range(3))
        record_property("health_check_us", round(full_us, 1))
        record_property("handle_only_check_us", round(handle_us, 1))
        print(f"\n[health] handle-only {handle_us:.1f} us, with the sentinel {full_us:.1f} us")
        assert full_us < 500, f"the per-frame health check costs {full_us:.0f} us"
    finally:
        context.destroy()


def test_robustness_is_read_from_gl_not_from_egl(display: egl.Display) -> None:
    robust = egl.create_context(display, robust=True)
    plain = egl.create_context(display, robust=False)
    try:
        robust.make_current()
        honoured = egl.ContextHealth(robust).robustness
        strategy = robust.get_integer(GL_RESET_NOTIFICATION_STRATEGY)
        assert honoured.reset_notification == (strategy == GL_LOSE_CONTEXT_ON_RESET)
        assert robust.gl_error() == GL_NO_ERROR  # reading it left no error behind
        plain.make_current()
        assert egl.ContextHealth(plain).robustness == egl.Robustness(
            reset_notification=False, robust_access=False
        )
    finally:
        robust.destroy()
        plain.destroy()


# ------------------------------------------------------------------------------- owned sessions


def _recycle_handle(session: OwnedSession) -> egl.EGLContext:
    """Destroy the session's EGL context from outside and give its handle to a new context."""
    found: dict[str, Any] = {}

    def on_gl_thread() -> None:
        ours = session.egl_context
        ours.release_current()
        assert egl.library().eglDestroyContext(ours.display.handle, ours.handle)
        stranger = egl.create_context(ours.display)
        ours.handle = stranger.handle  # what NVIDIA does by itself: the same address again
        found["stranger"] = stranger

    session.thread.call(on_gl_thread)
    return found["stranger"]


def test_a_recycled_context_handle_is_a_loss(session: OwnedSession) -> None:
    session.run(lambda: session.mgl.buffer(reserve=16).release())
    stranger = _recycle_handle(session)
    handle_checks: dict[str, bool] = {}

    def frame() -> None:
        # What a handle-only check sees: EGL knows the handle and it is current. Both say "alive".
        handle_checks["valid"] = session.egl_context.is_valid()
        handle_checks["current"] = session.egl_context.is_current()

    with pytest.raises(ContextLostError) as info:
        session.run(frame)
    assert handle_checks == {"valid": True, "current": True}
    assert "another context" in info.value.reason
    # The stranger is not ours: abandoning the session must not destroy it.
    session.abandon()
    assert stranger.is_valid()
    stranger.destroy()


def test_a_recycled_handle_current_on_another_thread_is_a_loss_and_survives(
    session: OwnedSession, display: egl.Display
) -> None:
    stranger = _recycle_handle(session)
    stranger.make_current()  # the newcomer's owner uses it on this thread: EGL_BAD_ACCESS there
    try:
        with pytest.raises(ContextLostError, match="EGL_BAD_ACCESS"):
            session.run(lambda: None)
        session.abandon()
        assert stranger.is_valid() and stranger.is_current()
    finally:
        stranger.destroy()


def test_context_info_reports_what_the_driver_honours() -> None:
    for robust in (True, False):
        session = OwnedSession.create(generation=1, robust=robust)
        try:
            info = session.info
            read_back: dict[str, Any] = {}

            def read(session: OwnedSession = session, found: dict[str, Any] = read_back) -> None:
                found["strategy"] = session.egl_context.get_integer(GL_RESET_NOTIFICATION_STRATEGY)

            session.run(read)
            assert info.reset_notification == (read_back["strategy"] == GL_LOSE_CONTEXT_ON_RESET)
            assert info.robust_access == session.health.robustness.robust_access
            assert info.robust == (info.reset_notification or info.robust_access)
            assert info.requested_reset_notification == session.egl_context.reset_notification
            assert info.requested_robust_access == session.egl_context.robust_access
            if not robust:
                assert not (info.robust or info.requested_reset_notification or info.requested_robust_access)
        finally:
            session.close()


def test_sessions_on_many_threads_keep_their_own_identity() -> None:
    sessions = [OwnedSession.create(generation=g) for g in (1, 2, 3)]
    errors: list[BaseException] = []

    def frames(session: OwnedSession) -> None:
        try:
            for _ in range(20):
                session.run(lambda s=session: s.mgl.buffer(reserve=8).release())
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=frames, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session in sessions:
        session.close()
    assert not errors, errors
