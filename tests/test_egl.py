"""Tests for gpu_seg.gl.egl against the real EGL of the machine (Mesa llvmpipe in CI; no mocks).

Scenarios that might take the process down (GL calls on destroyed contexts) run in subprocesses
that print one JSON object per line, so a crash still leaves the findings gathered before it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_seg.gl import egl
from gpu_seg.gl.constants import (
    GL_MAJOR_VERSION,
    GL_MINOR_VERSION,
    GL_NO_ERROR,
    GL_NO_RESET_NOTIFICATION,
    GL_RESET_NOTIFICATION_STRATEGY,
)
from gpu_seg.gl.egl.bindings import EGL_EXTENSION_PROTOTYPES, EGL_PROTOTYPES, GL_PROTOTYPES

moderngl = pytest.importorskip("moderngl")

ROOT = Path(__file__).resolve().parents[1]

try:
    _DISPLAY: egl.Display | None = egl.open_display()
    _SKIP_REASON = ""
except (egl.EGLError, ValueError) as _exc:  # pragma: no cover - machines without EGL
    _DISPLAY = None
    _SKIP_REASON = f"no usable EGL display: {_exc}"

pytestmark = pytest.mark.skipif(_DISPLAY is None, reason=_SKIP_REASON or "no EGL")


@pytest.fixture(autouse=True)
def _keep_the_session_context_current():
    """These tests switch and destroy contexts; give other tests back whatever was current."""
    with egl.preserve_current():
        yield


@pytest.fixture
def display() -> egl.Display:
    assert _DISPLAY is not None
    return _DISPLAY


@pytest.fixture
def context(display: egl.Display):
    ctx = egl.create_context(display)
    yield ctx
    ctx.destroy()


def _outside_egl() -> ctypes.CDLL:
    """A separate ctypes handle on libEGL, standing for 'someone else' destroying our context."""
    lib = ctypes.CDLL(egl.library().name)
    lib.eglDestroyContext.restype = ctypes.c_uint
    lib.eglDestroyContext.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


def _wrap(context: egl.EGLContext) -> Any:
    context.make_current()
    return moderngl.create_context(standalone=True, require=330, context=context.loader())


def _clear_and_read(ctx: Any, color: tuple[float, float, float, float]) -> np.ndarray:
    fbo = ctx.simple_framebuffer((8, 8), components=4)
    fbo.use()
    ctx.clear(*color)
    return np.frombuffer(fbo.read(components=4), np.uint8).reshape(8, 8, 4)


def _run_script(body: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``body`` in a fresh interpreter; returns (returncode, JSON lines, stderr)."""
    prelude = textwrap.dedent(
        """
        import ctypes, json, sys
        import numpy as np
        import moderngl
        from gpu_seg.gl import egl as E

        def emit(**kw):
            print(json.dumps(kw), flush=True)

        def attempt(fn):
            try:
                return {"ok": fn()}
            except Exception as exc:
                return {"raises": type(exc).__name__, "message": str(exc)[:200]}

        lib = E.library()
        outside = ctypes.CDLL(lib.name)
        outside.eglDestroyContext.restype = ctypes.c_uint
        outside.eglDestroyContext.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        outside.eglMakeCurrent.restype = ctypes.c_uint
        outside.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
        outside.eglGetCurrentContext.restype = ctypes.c_void_p
        outside.eglGetError.restype = ctypes.c_int32
        outside.eglTerminate.restype = ctypes.c_uint
        outside.eglTerminate.argtypes = [ctypes.c_void_p]

        display = E.open_display()
        c = E.create_context(display)
        c.make_current()
        ctx = moderngl.create_context(standalone=True, require=330, context=c.loader())
        health = E.ContextHealth(c)
        fbo = ctx.simple_framebuffer((8, 8), components=4)
        fbo.use()
        buf = ctx.buffer(bytes(range(16)))
        ctx.clear(0.25, 0.5, 0.75, 1.0)
        emit(step="setup", pixel=list(fbo.read(components=4)[:4]), error=ctx.error)

        raw_get_error = ctypes.CFUNCTYPE(ctypes.c_uint)(c.get_proc_address("glGetError"))
        raw_reset = ctypes.CFUNCTYPE(ctypes.c_uint)(c.get_proc_address("glGetGraphicsResetStatus"))

        def probe(step):
            # What the checks say, then what GL calls through moderngl do.
            current = int(outside.eglGetCurrentContext() or 0)
            emit(
                step=step,
                egl_current_is_ours=current == c.handle,
                egl_current_is_none=current == 0,
                is_valid=c.is_valid(),
                raw_glGetError=raw_get_error(),
                raw_glGetGraphicsResetStatus=raw_reset(),
            )
            def clear_read():
                ctx.clear(1.0, 0.0, 0.0, 1.0)
                return list(fbo.read(components=4)[:4])
            def read_into_sentinel():
                out = bytearray(b"\\xab" * 256)
                fbo.read_into(out, components=4)
                return list(out[:4])
            emit(
                step=step,
                clear_read=attempt(clear_read),
                read_into_sentinel=attempt(read_into_sentinel),
                ctx_error=attempt(lambda: ctx.error),
                buffer_read=attempt(lambda: list(buf.read()[:4])),
                new_texture=attempt(lambda: ctx.texture((4, 4), 4).glo),
                new_buffer=attempt(lambda: ctx.buffer(reserve=16).glo),
            )
        """
    )
    script = prelude + textwrap.dedent(body) + '\nemit(step="end")\n'
    run_env = dict(os.environ)
    run_env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + run_env.get("PYTHONPATH", "")
    if env:
        run_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        env=run_env,
        cwd=str(ROOT),
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, lines, proc.stderr


def _step(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for line in lines:
        if line.get("step") == name:
            merged.update(line)
    assert merged, f"step {name!r} missing from {lines}"
    return merged


def _assert_completed(rc: int, lines: list[dict[str, Any]], stderr: str) -> None:
    assert rc == 0, f"subprocess died with {rc}; last findings {lines[-3:]}\n{stderr[-2000:]}"
    assert lines and lines[-1].get("step") == "end", f"{lines}\n{stderr[-2000:]}"


# --------------------------------------------------------------------------------------------------
# Library, display, info
# --------------------------------------------------------------------------------------------------


def test_egl_info_describes_the_setup() -> None:
    info = egl.egl_info()
    assert "error" not in info, info
    assert info["version"].count(".") == 1
    assert info["vendor"]
    assert isinstance(info["client_extensions"], list)
    assert isinstance(info["display_extensions"], list)
    assert info["devices_count"] == len(info["devices"])
    json.dumps(info)  # serialisable for `gpu-seg info`


def test_open_display_is_shared_and_initialised(display: egl.Display) -> None:
    assert egl.open_display() is display
    assert display.version >= (1, 4)
    assert display.platform in egl.PLATFORMS
    if display.platform == "device":
        assert display.device_index == 0
    display.reinitialize()  # idempotent


def test_open_display_rejects_bad_device_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        egl.open_display(-1)
    with pytest.raises(egl.EGLError) as excinfo:
        egl.open_display(999)
    assert excinfo.value.code_name == "EGL_BAD_DEVICE_EXT"
    monkeypatch.setenv(egl.ENV_DEVICE, "999")
    with pytest.raises(egl.EGLError):
        egl.open_display()
    monkeypatch.setenv(egl.ENV_DEVICE, "gpu")
    with pytest.raises(ValueError):
        egl.open_display()
    with pytest.raises(ValueError):
        egl.open_display(platforms=("x11",))


def test_libegl_env_override() -> None:
    body = """
    emit(step="override", library=lib.name)
    """
    rc, lines, stderr = _run_script(body, env={egl.ENV_LIBEGL: "libEGL.so.1"})
    _assert_completed(rc, lines, stderr)
    assert _step(lines, "override")["library"] == "libEGL.so.1"

    missing = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gpu_seg.gl import egl\n"
            "try:\n    egl.library()\nexcept egl.EGLError as e:\n    print('EGLError', e.code)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), egl.ENV_LIBEGL: "libEGL_does_not_exist.so"},
        cwd=str(ROOT),
    )
    assert missing.stdout.strip() == "EGLError None", missing.stderr


def test_every_egl_call_is_typed_and_undeclared_names_are_refused() -> None:
    lib = egl.library()
    assert lib.eglGetCurrentContext.restype is ctypes.c_void_p  # a pointer, never a truncated int
    for name, (restype, argtypes) in EGL_PROTOTYPES.items():
        function = getattr(lib, name)
        assert function.restype is restype and function.argtypes == argtypes, name
    with pytest.raises(AttributeError, match="no declared prototype"):
        lib.eglSwapBuffers  # noqa: B018 - exported by libEGL, not declared: refused
    context = egl.create_context(egl.open_display())
    with pytest.raises(egl.EGLError, match="no declared prototype"):
        context.gl_function("glClear")
    context.destroy()


def test_every_egl_and_gl_name_in_the_source_is_declared() -> None:
    """A static sweep, for code paths that tests rarely reach (error branches)."""
    declared = set(EGL_PROTOTYPES) | set(EGL_EXTENSION_PROTOTYPES) | set(GL_PROTOTYPES)
    source = ROOT / "src" / "gpu_seg" / "gl"
    called: dict[str, str] = {}
    for path in source.rglob("*.py"):
        text = path.read_text()
        for name in re.findall(r"\.(egl[A-Z]\w*)\(", text) + re.findall(r"_function\(\"(\w+)\"\)", text):
            called[name] = path.name
    assert called, "the sweep found no calls: the patterns are out of date"
    assert {name: where for name, where in called.items() if name not in declared} == {}


def test_egl_error_carries_code_name() -> None:
    err = egl.EGLError("eglMakeCurrent", 0x3006)
    assert err.code_name == "EGL_BAD_CONTEXT"
    assert "EGL_BAD_CONTEXT" in str(err)
    assert isinstance(err, RuntimeError)
    assert egl.egl_error_name(0x300E) == "EGL_CONTEXT_LOST"


# --------------------------------------------------------------------------------------------------
# Contexts and moderngl
# --------------------------------------------------------------------------------------------------


def test_moderngl_renders_through_the_loader(context: egl.EGLContext) -> None:
    ctx = _wrap(context)
    try:
        assert ctx.version_code >= 330
        assert context.is_current() and context.is_valid()
        # k/255 converts to exactly k on every driver (0.5 would be a tie that drivers round apart).
        pixels = _clear_and_read(ctx, (64 / 255, 128 / 255, 191 / 255, 1.0))
        assert (pixels == np.array([64, 128, 191, 255], np.uint8)).all()

        prog = ctx.program(
            vertex_shader="#version 330\nin vec2 p;\nvoid main() { gl_Position = vec4(p, 0.0, 1.0); }",
            fragment_shader="#version 330\nout vec4 o;\nvoid main() { o = vec4(1.0, 0.0, 1.0, 1.0); }",
        )
        vbo = ctx.buffer(np.array([-1, -1, 3, -1, -1, 3], np.float32).tobytes())
        vao = ctx.vertex_array(prog, [(vbo, "2f", "p")])
        fbo = ctx.simple_framebuffer((4, 4), components=4)
        fbo.use()
        ctx.clear(0.0, 0.0, 0.0, 0.0)
        vao.render(moderngl.TRIANGLES)
        drawn = np.frombuffer(fbo.read(components=4), np.uint8).reshape(4, 4, 4)
        assert (drawn == np.array([255, 0, 255, 255], np.uint8)).all()
        assert ctx.error == "GL_NO_ERROR"
        assert egl.ContextHealth(context).lost_reason() is None
    finally:
        ctx.release()
    assert context.destroyed
    assert not context.is_current()


@pytest.mark.parametrize("surfaceless", [None, False])
@pytest.mark.parametrize("platform", ["device", "surfaceless"])
def test_platforms_and_pbuffer(platform: str, surfaceless: bool | None) -> None:
    try:
        display = egl.open_display(platforms=(platform,))
    except egl.EGLError as exc:
        pytest.skip(f"{platform} platform unavailable: {exc}")
    context = egl.create_context(display, surfaceless=surfaceless)
    assert (context.surface != 0) == (surfaceless is False)
    ctx = _wrap(context)
    try:
        pixels = _clear_and_read(ctx, (0.0, 1.0, 0.0, 1.0))
        assert (pixels == np.array([0, 255, 0, 255], np.uint8)).all()
        assert ctx.error == "GL_NO_ERROR"
    finally:
        ctx.release()


def test_gl_version_fallback(display: egl.Display) -> None:
    with pytest.raises(ValueError):
        egl.create_context(display, gl_version=(3, 2))
    low = egl.create_context(display, gl_version=(3, 3))
    assert low.gl_version == (3, 3)
    low.destroy()
    high = egl.create_context(display, gl_version=(4, 9))  # no driver has it yet: falls back
    try:
        assert (3, 3) <= high.gl_version < (4, 9)
        high.make_current()
        assert high.get_integer(GL_MAJOR_VERSION) * 10 + high.get_integer(GL_MINOR_VERSION) >= (
            high.gl_version[0] * 10 + high.gl_version[1]
        )
    finally:
        high.destroy()


def test_robustness_and_reset_status(display: egl.Display, record_property: Any) -> None:
    robust = egl.create_context(display, robust=True)
    plain = egl.create_context(display, robust=False)
    try:
        robust.make_current()
        health = egl.ContextHealth(robust)
        assert health.graphics_reset_status() == GL_NO_ERROR
        strategy = robust.get_integer(GL_RESET_NOTIFICATION_STRATEGY)
        # What EGL accepted is what GL honours here (ContextInfo reports both where they differ).
        accepted = egl.Robustness(robust.reset_notification, robust.robust_access)
        assert health.robustness == accepted
        record_property("egl_vendor", display.vendor)
        record_property("reset_notification_lose_context_on_reset", health.robustness.reset_notification)
        record_property("robust_access", health.robustness.robust_access)
        print(
            f"\n[egl] {display.vendor} EGL {display.version}: accepted {accepted}, honoured "
            f"{health.robustness}, GL strategy=0x{strategy:04X}, "
            f"reset status supported={health.reset_status_supported}"
        )
        assert health.lost_reason() is None

        plain.make_current()
        assert not plain.robust
        assert plain.get_integer(GL_RESET_NOTIFICATION_STRATEGY) == GL_NO_RESET_NOTIFICATION
        assert egl.ContextHealth(plain).graphics_reset_status() == GL_NO_ERROR
        plain.release_current()
        with pytest.raises(egl.EGLError):
            plain.get_integer(GL_RESET_NOTIFICATION_STRATEGY)  # needs the context current
    finally:
        robust.destroy()
        plain.destroy()


def test_loader_protocol_and_nesting(context: egl.EGLContext) -> None:
    ctx = _wrap(context)
    try:
        context.release_current()
        assert not context.is_current()
        with ctx:
            assert context.is_current()
            with ctx:
                assert context.is_current()
            assert context.is_current()  # the inner block restores the outer one's state
        assert not context.is_current()
        context.make_current()
        with ctx:
            pass
        assert context.is_current()  # it was current before the block, so it stays current
        loader = context.loader()
        assert loader.load("glClear") != 0
        assert isinstance(loader.load("glThisDoesNotExist_gpu_seg"), int)  # glvnd stubs any gl* name
        loader.__exit__()  # moderngl calls __exit__ without arguments; unbalanced, it releases
        assert not context.is_current()
    finally:
        ctx.release()


def test_loaders_hand_moderngl_the_same_address_objects(display: egl.Display) -> None:
    """moderngl keeps a reference to every address a loader returns: the same int object for a name
    in every context keeps them from piling up (a new int each time left 21 KiB per context)."""
    first, second = egl.create_context(display), egl.create_context(display)
    try:
        address = first.loader().load("glDrawArraysInstanced")
        assert address != 0
        assert second.loader().load("glDrawArraysInstanced") is address
    finally:
        first.destroy()
        second.destroy()


def test_extension_names_leaked_by_moderngl_are_given_back_once(context: egl.EGLContext) -> None:
    """moderngl 5.13's create_context keeps a second reference to every extension name (17 KiB per
    context on llvmpipe). gpu_seg gives it back where it sees it, and never twice."""
    from gpu_seg.gl import moderngl_refs

    if not moderngl_refs.counts_reliable():
        pytest.skip("reference counts are not reliable on this interpreter (free-threaded)")
    context.make_current()
    mgl = moderngl.create_context(standalone=True, require=330, context=context.loader())
    try:
        given = moderngl_refs.give_back_extension_names(mgl)
        assert moderngl_refs.give_back_extension_names(mgl) == 0
        names = list(mgl.extensions)
        assert given in (0, len(names))  # 0: a moderngl that does not leak them
        controls = [names[0][:1] + names[0][1:]]  # held like the names: a list and a set
        held = set(controls)
        extra = [sys.getrefcount(names[i]) - sys.getrefcount(controls[0]) for i in range(len(names))]
        assert extra == [0] * len(names)
        assert held
    finally:
        mgl.release()


def test_gl_calls_without_a_context_land_in_noop_stubs_here(display: egl.Display) -> None:
    """gpu_seg releases a lost generation's objects with no context current only where the GL
    dispatch has no-op stubs (libglvnd or Mesa's libglapi): true on every machine this project
    runs on (Mesa llvmpipe through libglvnd here and in CI, NVIDIA through libglvnd)."""
    from gpu_seg.gl import rawgl

    context = egl.create_context(display)
    try:
        assert rawgl.calls_without_context_do_nothing(context.get_proc_address)
        assert rawgl.calls_without_context_do_nothing(rawgl.resolve)
    finally:
        context.destroy()
    elsewhere = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value  # not a dispatch stub
    assert rawgl.library_of(elsewhere).startswith("libc")
    assert not rawgl.calls_without_context_do_nothing(lambda name: elsewhere)
    assert not rawgl.calls_without_context_do_nothing(lambda name: 0)  # unknown: not assumed


def test_preserve_current_restores_the_outer_context(display: egl.Display) -> None:
    outer = egl.create_context(display)
    try:
        outer.make_current()
        with egl.preserve_current():
            inner = egl.create_context(display)
            inner.make_current()
            assert inner.is_current() and not outer.is_current()
            inner.destroy()
        assert outer.is_current()
        outer.release_current()
        with egl.preserve_current():
            outer.make_current()
        assert not outer.is_current()
    finally:
        outer.destroy()


def test_threads_one_current_thread_at_a_time(context: egl.EGLContext) -> None:
    context.make_current()
    result: dict[str, Any] = {}

    def other_thread() -> None:
        try:
            context.make_current()
            result["first"] = "ok"
        except egl.EGLError as exc:
            result["first"] = exc.code_name
        result["released"].wait(10)
        context.make_current()
        result["error"] = context.gl_error()
        result["current_there"] = context.is_current()
        context.release_current()

    result["released"] = threading.Event()
    thread = threading.Thread(target=other_thread)
    thread.start()
    while "first" not in result and thread.is_alive():
        thread.join(0.01)
    assert result["first"] == "EGL_BAD_ACCESS"
    context.release_current()
    result["released"].set()
    thread.join(30)
    assert result["error"] == GL_NO_ERROR
    assert result["current_there"] is True
    assert not context.is_current()
    context.make_current()  # back on this thread after the hand-over
    assert context.is_current()


# --------------------------------------------------------------------------------------------------
# Destroyed contexts
# --------------------------------------------------------------------------------------------------


def test_destroy_is_idempotent_and_make_current_raises(context: egl.EGLContext) -> None:
    ctx = _wrap(context)
    health = egl.ContextHealth(context)
    context.destroy()
    context.destroy()
    assert context.destroyed and not context.is_valid() and not context.is_current()
    with pytest.raises(egl.EGLError) as excinfo:
        context.make_current()
    assert excinfo.value.code_name == "EGL_BAD_CONTEXT"
    with pytest.raises(egl.EGLError):
        with ctx:
            pass
    assert health.lost_reason() == "the EGL context was destroyed"
    ctx.release()  # calls destroy() again: still fine


def test_destroyed_from_outside_then_make_current_raises(context: egl.EGLContext) -> None:
    ctx = _wrap(context)
    context.release_current()
    assert _outside_egl().eglDestroyContext(context.display.handle, context.handle) == 1
    assert not context.is_valid()
    with pytest.raises(egl.EGLError) as excinfo:
        context.make_current()
    assert excinfo.value.code_name == "EGL_BAD_CONTEXT"
    with pytest.raises(egl.EGLError):
        with ctx:
            pass
    ctx.release()  # does not destroy the stale handle a second time


def test_gl_calls_after_destroy_while_current() -> None:
    """eglDestroyContext of the current context only marks it; GL keeps working until released."""
    body = """
    emit(step="destroy", result=outside.eglDestroyContext(display.handle, c.handle))
    probe("destroyed_still_current")
    emit(step="make_current", result=attempt(c.make_current))
    probe("after_make_current")
    emit(step="with_ctx", result=attempt(lambda: ctx.__enter__()))
    emit(step="health", result=attempt(health.lost_reason))
    """
    rc, lines, stderr = _run_script(body)
    _assert_completed(rc, lines, stderr)
    zombie = _step(lines, "destroyed_still_current")
    assert _step(lines, "destroy")["result"] == 1
    # The checks: only eglQueryContext (is_valid) notices; the context is still current.
    assert zombie["egl_current_is_ours"] is True
    assert zombie["is_valid"] is False
    assert zombie["raw_glGetError"] == 0
    assert zombie["raw_glGetGraphicsResetStatus"] == 0
    # GL still works on the marked context (as the EGL spec says), no crash, no error.
    assert zombie["clear_read"] == {"ok": [255, 0, 0, 255]}
    assert zombie["read_into_sentinel"] == {"ok": [255, 0, 0, 255]}
    assert zombie["ctx_error"] == {"ok": "GL_NO_ERROR"}
    assert "ok" in zombie["new_texture"]
    # make_current notices (via eglQueryContext), releases the zombie, raises EGL_BAD_CONTEXT.
    assert "EGL_BAD_CONTEXT" in _step(lines, "make_current")["result"]["message"]
    released = _step(lines, "after_make_current")
    assert released["egl_current_is_none"] is True
    _assert_no_current_context_behaviour(released)
    assert _step(lines, "with_ctx")["result"]["raises"] == "EGLError"
    assert _step(lines, "health")["result"] == {"ok": "the EGL context was destroyed"}


def test_gl_calls_after_release_and_destroy() -> None:
    """Non-current, then destroyed: GL calls go to libglvnd no-op stubs."""
    body = """
    c.release_current()
    emit(step="destroy", result=outside.eglDestroyContext(display.handle, c.handle))
    probe("destroyed_not_current")
    emit(step="make_current", result=attempt(c.make_current))
    emit(step="with_ctx", result=attempt(lambda: ctx.__enter__()))
    """
    rc, lines, stderr = _run_script(body)
    _assert_completed(rc, lines, stderr)
    gone = _step(lines, "destroyed_not_current")
    assert gone["egl_current_is_none"] is True
    assert gone["is_valid"] is False
    _assert_no_current_context_behaviour(gone)
    assert "EGL_BAD_CONTEXT" in _step(lines, "make_current")["result"]["message"]
    assert _step(lines, "with_ctx")["result"]["raises"] == "EGLError"


def _assert_no_current_context_behaviour(found: dict[str, Any]) -> None:
    # No crash; glGetError and glGetGraphicsResetStatus return 0, so they detect nothing.
    assert found["raw_glGetError"] == 0
    assert found["raw_glGetGraphicsResetStatus"] == 0
    assert found["ctx_error"] == {"ok": "GL_NO_ERROR"}
    # glReadPixels does nothing: the destination keeps whatever it held. fbo.read() returns a
    # fresh, *uninitialised* bytes object (stale heap data, not necessarily zeros).
    assert found["read_into_sentinel"] == {"ok": [0xAB] * 4}
    assert "ok" in found["clear_read"]
    # glGen*/glCreate*/glMapBufferRange return 0/NULL, which moderngl turns into exceptions.
    assert found["new_texture"]["raises"] == "Error"
    assert found["new_buffer"]["raises"] == "Error"
    assert found["buffer_read"]["raises"] == "Error"


def test_gl_calls_go_to_whatever_context_is_current() -> None:
    """After our context dies, GL calls through its moderngl wrapper hit another current context.

    The other context may even have our old handle (NVIDIA hands it out again; Mesa does not), so
    the health check must say "lost" either way.
    """
    body = """
    c.release_current()
    outside.eglDestroyContext(display.handle, c.handle)
    c2 = E.create_context(display)
    c2.make_current()
    ctx2 = moderngl.create_context(standalone=True, require=330, context=c2.loader())
    fbo2 = ctx2.simple_framebuffer((8, 8), components=4)
    fbo2.use()
    ctx2.clear(0.0, 1.0, 0.0, 1.0)
    emit(step="other", same_gl_names=fbo2.glo == fbo.glo,
         ctx1_read=attempt(lambda: list(fbo.read(components=4)[:4])),
         ctx1_error=attempt(lambda: ctx.error),
         same_handle=c2.handle == c.handle,
         health=attempt(health.lost_reason))
    """
    rc, lines, stderr = _run_script(body)
    _assert_completed(rc, lines, stderr)
    other = _step(lines, "other")
    if other["same_gl_names"]:
        # The dead context's framebuffer name now means the other context's framebuffer.
        assert other["ctx1_read"] == {"ok": [0, 255, 0, 255]}
    assert other["ctx1_error"] == {"ok": "GL_NO_ERROR"}
    expected = "another context" if other["same_handle"] else "was destroyed"
    assert expected in other["health"]["ok"]


def test_display_terminated_from_outside() -> None:
    body = """
    emit(step="terminate", result=outside.eglTerminate(display.handle))
    probe("terminated_still_current")
    emit(step="make_current", result=attempt(c.make_current))
    emit(step="make_current_again", result=attempt(c.make_current))
    display.reinitialize()
    c3 = E.create_context(display)
    c3.make_current()
    ctx3 = moderngl.create_context(standalone=True, require=330, context=c3.loader())
    f3 = ctx3.simple_framebuffer((2, 2), components=4)
    f3.use()
    ctx3.clear(0.0, 0.0, 1.0, 1.0)
    emit(step="recovered", pixel=list(f3.read(components=4)[:4]), error=ctx3.error)
    """
    rc, lines, stderr = _run_script(body)
    _assert_completed(rc, lines, stderr)
    zombie = _step(lines, "terminated_still_current")
    assert zombie["egl_current_is_ours"] is True and zombie["is_valid"] is False
    assert _step(lines, "make_current")["result"]["raises"] == "EGLError"
    assert _step(lines, "make_current_again")["result"]["raises"] == "EGLError"
    assert _step(lines, "recovered") == {
        "step": "recovered",
        "pixel": [0, 0, 255, 255],
        "error": "GL_NO_ERROR",
    }


# --------------------------------------------------------------------------------------------------
# Leaks
# --------------------------------------------------------------------------------------------------

_LEAK_SCRIPT = """
import json, sys
import numpy as np
import moderngl
from gpu_seg.gl import egl as E

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

with_moderngl = sys.argv[1] == "moderngl"
display = E.open_display()
samples = {}
for i in range(220):
    c = E.create_context(display)
    c.make_current()
    if with_moderngl:
        ctx = moderngl.create_context(standalone=True, require=330, context=c.loader())
        fbo = ctx.simple_framebuffer((16, 16), components=4)
        fbo.use()
        ctx.clear(i % 256 / 255.0, 0.0, 0.0, 1.0)
        px = np.frombuffer(fbo.read(components=4), np.uint8)
        assert px[0] == i % 256 and ctx.error == "GL_NO_ERROR", (i, px[:4], ctx.error)
        fbo.release()
        ctx.release()
    else:
        assert c.gl_error() == 0
        c.destroy()
    assert not c.is_valid()
    if i in (19, 219):
        samples[i] = rss_mib()
print(json.dumps({"growth_mib": samples[219] - samples[19], "rss_mib": samples[219]}))
"""


@pytest.mark.parametrize(("mode", "bound_mib"), [("egl", 4.0), ("moderngl", 24.0)])
def test_create_destroy_200_contexts_is_bounded(mode: str, bound_mib: float, record_property: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _LEAK_SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])["growth_mib"]
    record_property(f"rss_growth_200_{mode}_mib", growth)
    # EGL alone: no growth. With moderngl called directly (without gpu_seg.gl.moderngl_refs), its
    # create_context keeps its extension names, about 17 KiB per moderngl.Context (38 KiB with
    # glcontext's loader, whose address ints pile up too), about 3.5 MiB over 200 contexts.
    assert growth < bound_mib, f"RSS grew {growth:.1f} MiB over 200 {mode} contexts"
