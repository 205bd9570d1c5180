"""Attached contexts: gpu_seg inside an application's glfw window on a virtual X server (Xvfb).

The application owns the context. When it destroys its window, gpu_seg reports the loss and
(auto) computes on the CPU; when the application hands over a new window's context, gpu_seg
rebuilds its programs and objects there.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

import gpu_seg
from gpu_seg.gl.session import GLError, native_current_context

from .process_memory import python_memory_kept

SIZE = (40, 30)


def _start_private_xvfb() -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "320x240x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    return server, f":{number}"


@pytest.fixture(scope="module")
def display():
    """An X display: $DISPLAY if set (``.ci/run`` starts Xvfb), else a private Xvfb, else skip.

    The environment, not the code under test, decides whether an application window can exist:
    without an X server (a headless GPU machine), or with one that offers no OpenGL 3.3 core
    visual, these tests skip and say why. Where a window can be made they run.
    """
    import glfw

    server = None
    if not os.environ.get("DISPLAY"):
        if shutil.which("Xvfb") is None:
            pytest.skip("attached-context tests need an X server: DISPLAY is unset and Xvfb is not installed")
        server, os.environ["DISPLAY"] = _start_private_xvfb()
    name = os.environ["DISPLAY"]
    try:
        if not _glfw_init(glfw):
            pytest.skip(f"attached-context tests need an X server: glfw cannot open DISPLAY={name}")
        _window_hints(glfw)
        probe = glfw.create_window(64, 64, "gpu_seg probe", None, None)
        if not probe:
            glfw.terminate()
            pytest.skip(f"the X server on DISPLAY={name} offers no OpenGL 3.3 core window (no GLX for it)")
        glfw.destroy_window(probe)
        glfw.terminate()
        yield name
    finally:
        if server is not None:
            del os.environ["DISPLAY"]
            server.terminate()
            server.wait(10)


def _glfw_init(glfw, attempts: int = 5) -> bool:
    """``glfw.init()``, tried again when the X server refuses a connection for a moment.

    A shared Xvfb under load refuses a few connections in a hundred ("Failed to open display");
    a display that is not there fails every attempt.
    """
    for attempt in range(attempts):
        if glfw.init():
            return True
        time.sleep(0.05 * (attempt + 1))
    return False


def _window_hints(glfw) -> None:
    glfw.default_window_hints()
    glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
    glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
    glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
    glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
    glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)


@pytest.fixture
def glfw_windows(display):
    import glfw

    assert _glfw_init(glfw), f"glfw could not initialise on {display}"  # it could in the display fixture
    windows = []

    def open_window():
        _window_hints(glfw)
        window = glfw.create_window(64, 64, "gpu_seg test", None, None)
        assert window, "glfw could not create a window"
        glfw.make_context_current(window)
        windows.append(window)
        return window

    def close_window(window):
        windows.remove(window)
        glfw.destroy_window(window)

    yield open_window, close_window
    for window in windows:
        glfw.destroy_window(window)
    glfw.terminate()


def _tensor(seed):
    return (np.random.default_rng(seed).standard_normal((16, 12, 4)) * 3).astype(np.float32)


def _assert_correct(result, tensor):
    want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


def test_window_destroyed_then_new_window_attached(glfw_windows):
    import moderngl

    open_window, close_window = glfw_windows
    window = open_window()
    app_ctx = moderngl.create_context(require=330)
    events = []
    with gpu_seg.SegmentationPostprocessor("softmax", context=app_ctx, on_event=events.append) as pp:
        assert pp.context_info.kind.startswith("attached")
        result = pp.process(_tensor(1), SIZE)
        assert result.backend == "gl"
        _assert_correct(result, _tensor(1))
        assert app_ctx.error == "GL_NO_ERROR"  # the application's context is left clean

        close_window(window)  # the application tears its context down
        result = pp.process(_tensor(2), SIZE)
        assert result.backend == "cpu"  # reported, never fabricated
        _assert_correct(result, _tensor(2))
        assert [e.kind for e in events] == ["context_lost"]

        open_window()  # a new window, its context current
        pp.attach()
        result = pp.process(_tensor(3), SIZE)
        assert result.backend == "gl"
        _assert_correct(result, _tensor(3))
        assert [e.kind for e in events] == ["context_lost", "rebuilt"]
        assert pp.stats["generation"] == 2 and pp.stats["rebuilds"] == 1


def test_gl_backend_raises_until_a_new_context_is_attached(glfw_windows):
    open_window, close_window = glfw_windows
    window = open_window()
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context="current") as pp:
        pp.process(_tensor(4), SIZE)
        close_window(window)
        with pytest.raises(gpu_seg.ContextLostError):
            pp.process(_tensor(5), SIZE)
        with pytest.raises(gpu_seg.ContextLostError, match="attach"):
            pp.process(_tensor(5), SIZE)
        open_window()
        pp.attach("current")
        _assert_correct(pp.process(_tensor(6), SIZE), _tensor(6))


def test_attached_context_used_from_another_thread_is_refused(glfw_windows):
    import threading

    open_window, _ = glfw_windows
    open_window()
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context="current") as pp:
        errors = []

        def other_thread():
            try:
                pp.process(_tensor(7), SIZE)
            except gpu_seg.GpuSegError as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert errors and "thread" in str(errors[0])
        _assert_correct(pp.process(_tensor(7), SIZE), _tensor(7))


_INVALID_CAPABILITY = 0x7FFF_FFFF  # glEnable of it: GL_INVALID_ENUM, and nothing else happens


def test_a_gl_error_in_the_frame_is_reported(glfw_windows):
    """An error raised by gpu_seg's own GL work is a GLError, not swallowed by a second read."""
    open_window, _ = glfw_windows
    open_window()
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context="current") as pp:
        pp.process(_tensor(8), SIZE)
        gl = pp._supervisor.generation
        submit = gl.pipeline.submit  # every readback strategy submits (direct: inside process)

        def submit_with_an_error(*args, **kwargs):
            result = submit(*args, **kwargs)
            gl.session.mgl.enable_direct(_INVALID_CAPABILITY)
            return result

        gl.pipeline.submit = submit_with_an_error
        with pytest.raises(GLError, match="GL_INVALID_ENUM"):
            pp.process(_tensor(8), SIZE)
        gl.pipeline.submit = submit
        _assert_correct(pp.process(_tensor(9), SIZE), _tensor(9))


def test_the_applications_pending_gl_error_is_not_the_frames(glfw_windows, caplog):
    """An error the application left pending is logged as the application's; the frame succeeds."""
    import moderngl

    open_window, _ = glfw_windows
    open_window()
    app_ctx = moderngl.create_context(require=330)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context=app_ctx) as pp:
        pp.process(_tensor(10), SIZE)
        app_ctx.enable_direct(_INVALID_CAPABILITY)  # the application's own mistake
        with caplog.at_level(logging.WARNING, logger="gpu_seg"):
            result = pp.process(_tensor(11), SIZE)
        assert result.backend == "gl"
        _assert_correct(result, _tensor(11))
        pending = [r for r in caplog.records if "GL_INVALID_ENUM" in r.getMessage()]
        assert pending and "application" in pending[0].getMessage()
        assert app_ctx.error == "GL_NO_ERROR"  # read once by gpu_seg (GL cannot hold it back)


def test_a_recycled_application_context_handle_is_a_loss(glfw_windows):
    """The application's next context may get the old handle (an address, reused by drivers)."""
    open_window, close_window = glfw_windows
    first = open_window()
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context="current") as pp:
        pp.process(_tensor(12), SIZE)
        close_window(first)
        open_window()  # the next context is current on this thread
        pp._supervisor.generation.session.native = (
            native_current_context()
        )  # what a recycled handle looks like
        with pytest.raises(gpu_seg.ContextLostError, match="not the one attached"):
            pp.process(_tensor(13), SIZE)
        pp.attach("current")
        _assert_correct(pp.process(_tensor(13), SIZE), _tensor(13))


def test_the_idle_release_of_an_attached_processor_frees_host_memory_only(glfw_windows, caplog):
    """The idle watch's thread may not use the application's context: it used to try, and logged
    an error with a traceback every idle period. Now it lets go of kept host memory only (GL objects:
    ``trim()`` on the context's thread)."""
    open_window, _ = glfw_windows
    open_window()
    tensor = _tensor(41)
    with caplog.at_level("WARNING", logger="gpu_seg"):
        with gpu_seg.SegmentationPostprocessor("softmax", context="current", idle_release_after=0.05) as pp:
            for _ in range(3):
                _assert_correct(pp.process(tensor, SIZE), tensor)
                time.sleep(0.2)  # idle: the watch fires
            objects = pp.live_gl_objects()
            assert objects > 0  # the GL objects stay: not on this thread's behalf
            confidence = np.empty((4, SIZE[1], SIZE[0]), np.float32)
            _assert_correct(pp.process(tensor, SIZE, confidence_out=confidence), tensor)
            time.sleep(0.2)
            assert len(pp._supervisor._staging) == 0  # host memory: let go of
            _assert_correct(pp.process(tensor, SIZE), tensor)
    assert "idle trim failed" not in caplog.text, caplog.text


def test_windows_that_come_and_go_leave_almost_nothing_behind(glfw_windows):
    """Every window whose context was attached left about 57 KiB of Python memory for good:
    moderngl's default loader gave it a new int for each of about 700 addresses, and the objects of
    the lost generation, dropped unreleased, kept its moderngl context (extension names and all)."""
    open_window, close_window = glfw_windows
    window = open_window()
    tensor = _tensor(51)
    unlimited = gpu_seg.LossBudget(capacity=10**9)
    policy = gpu_seg.RecoveryPolicy(budget=unlimited, backoff=gpu_seg.Backoff(base=0))
    with gpu_seg.SegmentationPostprocessor("softmax", context="current", policy=policy) as pp:
        pp.process(tensor, SIZE)

        def cycle() -> None:
            nonlocal window
            close_window(window)
            assert pp.process(tensor, SIZE).backend == "cpu"
            window = open_window()
            pp.attach("current")
            result = pp.process(tensor, SIZE)
            assert result.backend == "gl"
            _assert_correct(result, tensor)

        kept = python_memory_kept(cycle)
    # What is left is moderngl's own: names it keeps from every program it introspects.
    assert kept < 8 * 1024, f"{kept / 1024:.1f} KiB of Python memory kept per window"


def test_attaching_leaves_the_moderngl_default_context_alone(glfw_windows):
    """moderngl makes every context it creates the default (``moderngl.get_context()``): attaching
    made gpu_seg's wrapper the application's default, and kept it after the window was gone."""
    import moderngl

    open_window, close_window = glfw_windows
    window = open_window()
    app_ctx = moderngl.create_context(require=330, share=False)
    assert moderngl.get_context() is app_ctx
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", context="current") as pp:
        pp.process(_tensor(52), SIZE)
        assert moderngl.get_context() is app_ctx
        close_window(window)
        with pytest.raises(gpu_seg.ContextLostError):
            pp.process(_tensor(52), SIZE)
        open_window()
        pp.attach("current")
        _assert_correct(pp.process(_tensor(53), SIZE), _tensor(53))
        assert moderngl.get_context() is app_ctx


def test_a_lost_generations_result_texture_is_lost_in_the_applications_moderngl_context_too(glfw_windows):
    """With the application's own moderngl context (never released by gpu_seg), a result texture
    kept past a loss was released with the lost generation and raised InputError as an input."""
    import moderngl

    open_window, close_window = glfw_windows
    window = open_window()
    tensor = (np.random.default_rng(53).standard_normal((16, 16, 1))).astype(np.float32)
    options = {"output_confidence_masks": True, "output_category_mask": False, "backend": "gl"}
    app_ctx = moderngl.create_context(require=330)
    with gpu_seg.SegmentationPostprocessor("sigmoid", context=app_ctx, **options) as pp:
        texture = pp.process_resident(tensor, (16, 16)).confidence_textures[0]
        source = gpu_seg.GLTensor(texture)
        close_window(window)
        with pytest.raises(gpu_seg.ContextLostError):
            pp.process(tensor, (16, 16))
        open_window()
        pp.attach(moderngl.create_context(require=330))
        with pytest.raises(gpu_seg.ContextLostError, match="upload the tensor again"):
            gpu_seg.GLTensor(texture)
        with pytest.raises(gpu_seg.ContextLostError, match="upload the tensor again"):
            pp.process_resident(source, (16, 16))
