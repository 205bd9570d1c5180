"""``gpu-seg view`` in a real glfw window on an X server (Xvfb): the picture read back from the
window's framebuffer equals the numpy composite (:mod:`gpu_seg.viewer.effects`) of the same frame and
masks within one 8-bit step, before and after real context losses (the window destroyed and a new
one opened), with the post-processing in the window's own context.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util

import numpy as np
import pytest

pytest.importorskip("glfw", reason="glfw is not installed")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

import gpu_seg  # noqa: E402
from gpu_seg.cli import view as view_command  # noqa: E402
from gpu_seg.viewer import (  # noqa: E402
    Compositor,
    Effect,
    Viewer,
    ViewerOptions,
    composite,
    effects,
    fit_image,
    font,
    foreground_probability,
    open_source,
    plan_layout,
)
from gpu_seg.viewer.window import Window, WindowSystem  # noqa: E402

from .segmenter_support import selfie_model  # noqa: E402
from .test_attached import display  # noqa: E402, F401  (the X server, or a skip that says why)

pytestmark = pytest.mark.usefixtures("display")

RADIUS = 5
#: One 8-bit step: GPU and numpy round the same float picture, maybe on either side of .5.
STEP = 1


def _expected_window(image, mask, effect, background, layout, text, radius=RADIUS):
    """The whole window in numpy: the picture on top, the stats bar below."""
    picture = composite(image, mask, effect, background, blur_radius=radius)
    ink = font.render_text(font.glyph_indices(text, 256), layout.picture_size[0], layout.text_scale)
    bar = effects.to_uint8(np.where(ink[..., None], effects.BAR_INK, effects.BAR_BACKGROUND))
    return np.concatenate([picture, bar])


def _assert_close(got, want, what):
    assert got.shape == want.shape, what
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= STEP, f"{what}: {int((diff > STEP).sum())} values off by up to {diff.max()}"


@pytest.fixture
def window():
    system = WindowSystem()
    opened = []

    def open_window(size):
        opened.append(Window(system, size, "gpu_seg viewer test", visible=False))
        return opened[-1]

    yield open_window
    for w in opened:
        w.destroy()
    system.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A real photo at a size other than the model's (256 x 256): 192 x 144 PNG."""
    path = tmp_path_factory.mktemp("viewer") / "astronaut.png"
    image = cv2.resize(skdata.astronaut(), (192, 144), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), image[..., ::-1])
    return path, image


@pytest.fixture(scope="module")
def cpu_masks(photo):
    """The photo's confidence masks from a CPU-only segmenter: not the viewer's code path."""
    with gpu_seg.ImageSegmenter.create_from_model_path(selfie_model(), backend="cpu") as segmenter:
        return segmenter.segment(photo[1]).confidence_masks


def test_the_gl_picture_is_the_numpy_picture_for_every_effect(window, rng):
    size = (200, 120)
    image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    background = rng.integers(0, 256, image.shape, dtype=np.uint8)
    mask = rng.uniform(-0.2, 1.2, size[::-1]).astype(np.float32)  # out of range: clamped
    layout = plan_layout(size, (1280, 720))
    win = window(layout.window_size)
    compositor = Compositor(win.ctx, blur_radius=RADIUS)
    compositor.set_background(background)
    text = " 12.5 FPS | LOSSES 3 | (TEST) 100%"
    for effect in Effect:
        for as_background in (False, True):  # a multi-class model's channel 0 is the background's
            stored = 1.0 - mask if as_background else mask
            compositor.draw(
                compositor.upload_frame(image),
                compositor.upload_mask(stored),
                effect,
                layout.picture_region,
                mask_is_background=as_background,
            )
            compositor.draw_bar(text, layout.bar_region, layout.text_scale)
            want = _expected_window(
                image, 1.0 - stored if as_background else mask, effect, background, layout, text
            )
            _assert_close(
                compositor.read_screen(layout.window_size), want, f"{effect.value}, {as_background}"
            )
    assert win.ctx.error == "GL_NO_ERROR"
    compositor.release()


def _run_viewer(photo, **options):
    shots = []

    def on_frame(viewer, record):
        shots.append((record, viewer.screenshot(), viewer.background))
        if record.index == 4:
            viewer.request_context_loss()  # what the L key does
        if record.index == 5:
            viewer.next_effect()  # what the E key does

    options = ViewerOptions(frames=7, visible=False, max_fps=0, blur_radius=RADIUS, **options)
    report = Viewer(selfie_model().read_bytes(), open_source(photo[0]), options, on_frame).run()
    return report, shots


def test_the_window_shows_the_numpy_composite_before_and_after_real_context_losses(photo, cpu_masks):
    report, shots = _run_viewer(photo, inject_loss_at=frozenset({3}))
    # frame 3: the window was destroyed before it; the post-processor found its context gone and
    # computed on the CPU, then was attached to the new window. Frame 5: the same, asked by "key".
    assert [record.backend for record, _, _ in shots] == ["gl", "gl", "gl", "cpu", "gl", "cpu", "gl"]
    assert report.context_losses == 2 and report.windows_opened == 3
    processor = report.postprocessor  # its own count agrees: two losses, two rebuilds, one CPU frame each
    assert (processor["context_losses"], processor["rebuilds"], processor["cpu_frames"]) == (2, 2, 2)
    assert [record.context_losses for record, _, _ in shots] == [0, 0, 0, 1, 1, 2, 2]
    assert "LOSSES 1" in shots[3][0].bar_text and " CPU " in shots[3][0].bar_text
    assert [record.effect for record, _, _ in shots] == [Effect.BLUR] * 6 + [Effect.REPLACE]
    layout = plan_layout((192, 144), (1280, 720))
    for record, shot, background in shots:
        np.testing.assert_allclose(record.confidence_masks, cpu_masks, atol=2e-6)  # the masks are right
        mask = foreground_probability(record.confidence_masks)
        want = _expected_window(record.image, mask, record.effect, background, layout, record.bar_text)
        _assert_close(shot, want, f"frame {record.index} ({record.backend})")
    assert shots[0][1][:144].std() > 20  # a photo, not a blank window


def test_with_backend_gl_a_loss_is_attached_and_the_frame_redone_on_the_gpu(photo):
    report, shots = _run_viewer(photo, inject_loss_at=frozenset({2}), backend="gl", effect="replace")
    assert [record.backend for record, _, _ in shots] == ["gl"] * 7
    assert report.context_losses == 2 and report.windows_opened == 3
    timestamps = [record.timestamp_ms for record, _, _ in shots]
    assert timestamps == sorted(set(timestamps))
    layout = plan_layout((192, 144), (1280, 720))
    for record, shot, background in shots:
        mask = foreground_probability(record.confidence_masks)
        want = _expected_window(record.image, mask, record.effect, background, layout, record.bar_text)
        _assert_close(shot, want, f"frame {record.index}")


class _Keyboard:
    """Key presses sent to a window through the X server's XTEST extension (libXtst), as a user's."""

    def __init__(self) -> None:
        names = [ctypes.util.find_library(name) for name in ("X11", "Xtst")]
        if None in names:
            pytest.skip("pressing keys in the window needs libX11 and libXtst (XTEST), not found here")
        self.x11, self.xtst = (ctypes.CDLL(name) for name in names)
        self.x11.XStringToKeysym.restype = ctypes.c_ulong
        self.x11.XStringToKeysym.argtypes = [ctypes.c_char_p]
        self.x11.XKeysymToKeycode.restype = ctypes.c_ubyte
        self.x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.x11.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
        self.x11.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]

    def press(self, window, *keys: str) -> None:
        """Focus ``window`` (a glfw window handle) and press and release each key."""
        import glfw

        x_display = glfw.get_x11_display()
        self.x11.XSetInputFocus(x_display, glfw.get_x11_window(window), 2, 0)  # RevertToParent, now
        for key in keys:
            code = self.x11.XKeysymToKeycode(x_display, self.x11.XStringToKeysym(key.encode()))
            self.xtst.XTestFakeKeyEvent(x_display, code, True, 0)
            self.xtst.XTestFakeKeyEvent(x_display, code, False, 0)
        self.x11.XSync(x_display, False)


def test_the_l_and_e_keys_lose_the_context_and_change_the_effect(photo):
    keyboard = _Keyboard()
    shots = []

    def on_frame(viewer, record):
        shots.append((record, viewer.screenshot(), viewer.background))
        if record.index == 1:
            keyboard.press(viewer.window.handle, "l", "e")  # read by the viewer after this frame

    options = ViewerOptions(frames=4, visible=True, max_fps=0, blur_radius=RADIUS)
    report = Viewer(selfie_model().read_bytes(), open_source(photo[0]), options, on_frame).run()
    assert [record.backend for record, _, _ in shots] == ["gl", "gl", "cpu", "gl"]
    assert [record.effect for record, _, _ in shots] == [Effect.BLUR] * 2 + [Effect.REPLACE] * 2
    assert report.context_losses == 1 and report.windows_opened == 2
    layout = plan_layout((192, 144), (1280, 720))
    for record, shot, background in shots:  # a visible window this time
        mask = foreground_probability(record.confidence_masks)
        want = _expected_window(record.image, mask, record.effect, background, layout, record.bar_text)
        _assert_close(shot, want, f"frame {record.index}")


def _cli(argv):
    parser = argparse.ArgumentParser()
    view_command.add_arguments(parser)
    return view_command.run(parser.parse_args([str(a) for a in argv]))


def test_cli_screenshot_after_an_injected_loss_matches_the_cpu_composite(photo, cpu_masks, tmp_path, capsys):
    backdrop = tmp_path / "backdrop.png"
    cv2.imwrite(str(backdrop), cv2.resize(skdata.coffee(), (100, 80))[..., ::-1])
    shot = tmp_path / "shot.png"
    argv = [photo[0], "--model", selfie_model(), "--effect", "replace", "--background", backdrop]
    argv += ["--frames", 4, "--inject-loss-at", 2, "--screenshot", shot, "--hidden", "--max-fps", 0]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    assert "viewed 4 frames" in out and "context losses: 1" in out and "cpu 1, gl 3" in out
    got = cv2.imread(str(shot))[..., ::-1]
    assert got.shape == (144 + font.CELL_HEIGHT, 192, 3)
    background = fit_image(cv2.imread(str(backdrop))[..., ::-1], (192, 144))
    want = composite(photo[1], foreground_probability(cpu_masks), "replace", background)
    _assert_close(got[:144], want, "screenshot")


def test_cli_says_when_the_screenshot_was_not_taken(tmp_path, capsys):
    """A run that ended before frame N (the window closed, Q pressed) printed its summary and exited 0
    with no screenshot and no word about it."""
    from gpu_seg.viewer import ViewerReport

    args = argparse.Namespace(frames=5, screenshot=str(tmp_path / "s.png"))
    assert view_command.summarise(args, ViewerReport(frames=3, seconds=1.0)) == 1
    printed = capsys.readouterr()
    assert "viewed 3 frames" in printed.out
    assert "no screenshot" in printed.err and "after 3 of the 5 frames" in printed.err
    assert view_command.summarise(args, ViewerReport(frames=5, seconds=1.0)) == 0
    assert "screenshot: " in capsys.readouterr().out


def test_cli_reports_what_cannot_run(photo, tmp_path, capsys):
    assert _cli([photo[0], "--screenshot", tmp_path / "s.png"]) == 2
    assert "--frames" in capsys.readouterr().err
    assert _cli([]) == 2
    assert _cli([tmp_path / "missing.mp4", "--model", selfie_model()]) == 1
    assert "no such file" in capsys.readouterr().err
    assert _cli(["--camera", 9, "--model", selfie_model()]) == 1
    assert "camera 9" in capsys.readouterr().err


def test_cli_refuses_what_it_cannot_show_with_a_clear_error(photo, tmp_path, capsys):
    """An image beyond the GL texture limit was a moderngl traceback; a camera index beyond a C int
    a cv2.error traceback; a loss injected after the last frame was silently never injected."""
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.full((4, 20000, 3), 128, np.uint8))
    base = ["--model", selfie_model(), "--frames", 1, "--hidden", "--max-fps", 0, "--backend", "cpu"]
    assert _cli([wide, *base]) == 1
    err = capsys.readouterr().err
    assert "gpu-seg view: input:" in err and "20000" in err and "Traceback" not in err
    assert _cli(["--camera", 2**31, "--model", selfie_model()]) == 1
    assert f"camera {2**31}" in capsys.readouterr().err
    assert _cli([photo[0], "--model", selfie_model(), "--frames", 2, "--inject-loss-at", 10]) == 2
    assert "--inject-loss-at 10" in capsys.readouterr().err


def test_with_backend_cpu_an_injected_loss_is_counted(photo, capsys):
    """The window's context is lost whatever computes the masks; the CPU post-processor never saw
    it, so the stats bar and the summary said 0 losses."""
    argv = [photo[0], "--model", selfie_model(), "--frames", 3, "--inject-loss-at", 1, "--hidden"]
    assert _cli([*argv, "--max-fps", 0, "--backend", "cpu"]) == 0
    assert "context losses: 1 (windows opened: 2)" in capsys.readouterr().out


def test_q_quits_at_once_at_a_low_frame_rate(photo):
    """The frame-rate limiter slept without reading the window's events: at 0.2 frames/s, Q took
    up to 5 s (17 s at 0.1 frames/s) to quit."""
    import time

    keyboard = _Keyboard()

    def on_frame(viewer, record):
        keyboard.press(viewer.window.handle, "q")  # read by the viewer after this frame

    options = ViewerOptions(frames=3, visible=True, max_fps=0.2, blur_radius=RADIUS, backend="cpu")
    started = time.monotonic()
    report = Viewer(selfie_model().read_bytes(), open_source(photo[0]), options, on_frame).run()
    assert report.frames == 1 and time.monotonic() - started < 4.5


def test_the_command_takes_file_names_that_are_not_utf8(photo, tmp_path):
    """``gpu-seg view`` with a Latin-1 input or screenshot name: cv2.haveImageWriter segfaulted on the
    screenshot's name (exit 139), and the window title raised UnicodeEncodeError. In a child
    process, so that a crash fails this test rather than ending the run."""
    import os
    import shutil
    import subprocess
    import sys

    folder = os.fsencode(tmp_path)
    image, shot = os.fsdecode(folder + b"/caf\xe9.png"), os.fsdecode(folder + b"/shot\xe9.png")
    shutil.copyfile(photo[0], image)
    argv = [sys.executable, "-m", "gpu_seg", "view", os.fsencode(image), "--model", str(selfie_model())]
    argv += [
        "--frames",
        "2",
        "--hidden",
        "--max-fps",
        "0",
        "--backend",
        "cpu",
        "--screenshot",
        os.fsencode(shot),
    ]
    done = subprocess.run(argv, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert cv2.imdecode(np.fromfile(shot, np.uint8), cv2.IMREAD_COLOR) is not None
