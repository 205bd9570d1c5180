"""The viewer's pieces that need no window: font, the numpy picture, layout, options, sources."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_seg
from gpu_seg.viewer import (
    Effect,
    ViewerOptions,
    composite,
    effects,
    font,
    open_source,
    plan_layout,
    stats_line,
)

cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")


# ------------------------------------------------------------------------------------------- font
def test_every_glyph_is_five_by_seven_and_the_atlas_holds_them_in_order():
    atlas = font.font_atlas()
    assert atlas.shape == (font.CELL_HEIGHT, font.CELL_WIDTH * len(font.GLYPHS))
    for index, rows in enumerate(font.GLYPHS.values()):
        bits = [[c == "#" for c in row] for row in rows.split(" ")]
        assert len(bits) == 7 and all(len(row) == 5 for row in bits), index
        cell = atlas[:, font.CELL_WIDTH * index : font.CELL_WIDTH * (index + 1)]
        assert (cell[1:8, :5] == np.array(bits) * 255).all()
        assert not cell[[0, 8]].any() and not cell[:, 5].any()  # blank margins


def test_glyph_indices_upper_case_pad_with_spaces_and_mark_unknown_characters():
    names = list(font.GLYPHS)
    indices = font.glyph_indices("fps é", 8)
    assert [names[i] for i in indices] == ["F", "P", "S", " ", "?", " ", " ", " "]
    assert len(font.glyph_indices("x" * 20, 4)) == 4


def test_rendered_text_is_each_glyph_scaled():
    text = font.glyph_indices("G7", 2)
    ink = font.render_text(text, width=30, scale=2)
    assert ink.shape == (18, 30)
    for slot, char in enumerate("G7"):
        bits = np.array([[c == "#" for c in row] for row in font.GLYPHS[char].split(" ")])
        cell = ink[:, 12 * slot : 12 * (slot + 1)]
        assert (cell[2:16, :10] == np.kron(bits, np.ones((2, 2), bool))).all()
    assert not ink[:, 24:].any()  # past the last slot


# ------------------------------------------------------------------------------------------- picture
def _blur_by_padding(image: np.ndarray, radius: int) -> np.ndarray:
    """The blur written another way: an edge-padded image and windowed sums, in float64."""
    w = effects.gaussian_weights(radius).astype(np.float64)
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    height, width = image.shape[:2]
    rows = sum(w[k] * padded[:, k : k + width] for k in range(len(w)))
    return sum(w[k] * rows[k : k + height] for k in range(len(w)))


def test_gaussian_weights_are_symmetric_and_sum_to_one():
    for radius in (0, 1, 5, 12):
        w = effects.gaussian_weights(radius)
        assert w.dtype == np.float32 and len(w) == 2 * radius + 1
        np.testing.assert_array_equal(w, w[::-1])
        assert abs(float(w.sum()) - 1.0) < 1e-6
        assert w[radius] == w.max()


def test_blur_is_the_separable_gaussian_with_repeated_edges(rng):
    image = rng.random((23, 31, 3), dtype=np.float32)
    np.testing.assert_allclose(effects.blur(image, 4), _blur_by_padding(image, 4), atol=1e-6)
    constant = np.full((9, 7, 3), 0.25, np.float32)
    np.testing.assert_allclose(effects.blur(constant, 6), constant, atol=1e-6)  # radius wider than the image


def test_composite_formulas(rng):
    frame = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    ones, zeros = np.ones((10, 12), np.float32), np.zeros((10, 12), np.float32)
    for effect in ("blur", "replace"):  # all foreground: the frame itself
        np.testing.assert_array_equal(composite(frame, ones, effect, background), frame)
    np.testing.assert_array_equal(composite(frame, zeros, "replace", background), background)
    np.testing.assert_array_equal(composite(frame, zeros, "overlay"), frame)
    blurred = effects.to_uint8(_blur_by_padding(frame / 255.0, 3))
    assert np.abs(composite(frame, zeros, "blur", blur_radius=3).astype(int) - blurred).max() <= 1
    half = np.full((10, 12), 0.5, np.float32)
    want = np.rint(frame * 0.75 + np.array([0, 255, 0]) * 0.25).astype(np.uint8)
    assert np.abs(composite(frame, half, "overlay").astype(int) - want).max() <= 1
    with pytest.raises(ValueError, match="background"):
        composite(frame, half, "replace")


def test_foreground_of_one_channel_is_the_channel_and_of_several_is_not_background():
    one = np.full((1, 2, 2), 0.8, np.float32)
    several = np.stack([np.full((2, 2), 0.3, np.float32), np.full((2, 2), 0.7, np.float32)])
    np.testing.assert_array_equal(effects.foreground_probability(one), one[0])
    np.testing.assert_allclose(effects.foreground_probability(several), 0.7)


def test_masks_outside_zero_to_one_are_clamped(rng):
    frame = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    background = np.zeros_like(frame)
    np.testing.assert_array_equal(composite(frame, np.full((4, 5), 3.0), "replace", background), frame)
    np.testing.assert_array_equal(composite(frame, np.full((4, 5), -2.0), "replace", background), background)


# ------------------------------------------------------------------------------------------- layout
def test_layout_puts_the_bar_under_the_picture_and_scales_large_frames_down():
    small = plan_layout((320, 240), (1280, 720))
    assert small.picture_size == (320, 240) and small.text_scale == 1
    assert small.window_size == (320, 240 + font.CELL_HEIGHT)
    assert small.bar_region == (0, 0, 320, font.CELL_HEIGHT)
    assert small.picture_region == (0, font.CELL_HEIGHT, 320, 240)
    assert plan_layout((640, 480), (1280, 720)).text_scale == 1
    large = plan_layout((1920, 1080), (1280, 720))
    assert large.picture_size == (1280, 720) and large.text_scale == 2
    assert large.fitted((2560, 1440 + 2 * large.bar_height)).picture_size == (2560, 1440 + large.bar_height)


def test_stats_line_names_every_figure():
    line = stats_line(24.25, 5.04, 3.5, "cpu", 2, Effect.REPLACE)
    for part in ("24.2 FPS", "MODEL 5.0 MS", "POST 3.5 MS", " CPU ", "LOSSES 2", "REPLACE"):
        assert part in line
    assert all(ch in font.GLYPHS for ch in line)  # nothing is drawn as "?"


# ------------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("options", "argument"),
    [
        (ViewerOptions(effect="sepia"), "effect"),
        (ViewerOptions(frames=0), "frames"),
        (ViewerOptions(blur_radius=65), "blur_radius"),
        (ViewerOptions(max_fps=-1.0), "max_fps"),
        (ViewerOptions(background=np.zeros((4, 4), np.uint8)), "background"),
        (ViewerOptions(background=np.zeros((4, 4, 3), np.float32)), "background"),
    ],
)
def test_bad_options_name_the_argument(options, argument):
    with pytest.raises(gpu_seg.InputError) as caught:
        options.checked()
    assert caught.value.argument == argument


def test_bad_sources_name_the_argument(tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    cases = [
        ({}, "input"),
        ({"path": tmp_path / "a.png", "camera": 0}, "input"),
        ({"path": tmp_path / "missing.mp4"}, "input"),
        ({"path": not_an_image}, "input"),
    ]
    for kwargs, argument in cases:
        with pytest.raises(gpu_seg.InputError) as caught:
            open_source(**kwargs)
        assert caught.value.argument == argument, kwargs


def test_a_video_loops_with_increasing_timestamps(tmp_path):
    path = tmp_path / "three.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (16, 8))
    for value in (0, 120, 240):
        writer.write(np.full((8, 16, 3), value, np.uint8))
    writer.release()
    source = open_source(path, loop=True)
    try:
        frames = [source.read() for _ in range(7)]
    finally:
        source.close()
    stamps = [stamp for _, stamp in frames]
    assert stamps == [0, 100, 200, 300, 400, 500, 600]
    levels = [int(frame.mean()) for frame, _ in frames]
    assert levels[:3] == levels[3:6] and levels[0] == levels[6] and levels[0] < levels[1] < levels[2]
    once = open_source(path, loop=False)
    try:
        assert [once.read() is None for _ in range(4)] == [False, False, False, True]
    finally:
        once.close()


def test_without_a_display_the_viewer_says_so(monkeypatch):
    pytest.importorskip("glfw", reason="glfw is not installed")
    from gpu_seg.viewer import ViewerError
    from gpu_seg.viewer.window import WindowSystem

    monkeypatch.setenv("DISPLAY", ":4321")  # no X server there
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ViewerError, match="DISPLAY=:4321"):
        WindowSystem(attempts=1)


def test_file_names_that_are_not_utf8_are_read_and_written_without_a_crash(tmp_path):
    """OpenCV's bindings segfault on a name that is not UTF-8 (a Latin-1 name from an old archive):
    ``gpu-seg view`` died with signal 11 on such an image, video or screenshot name. In a child
    process, so that a crash fails this test rather than ending the run."""
    import os
    import subprocess
    import sys

    from .test_ray_parts import write_video

    folder = os.fsencode(tmp_path)
    image, video, shot = (
        os.fsdecode(folder + b"/caf\xe9" + suffix) for suffix in (b".png", b".avi", b"-shot.png")
    )
    assert cv2.imwrite(str(tmp_path / "plain.png"), np.full((48, 64, 3), 90, np.uint8))
    os.replace(tmp_path / "plain.png", image)
    write_video(tmp_path / "plain.avi", 3, "MJPG", (64, 48))
    os.replace(tmp_path / "plain.avi", video)
    script = (
        "import sys; from gpu_seg.viewer import open_source, read_image, save_image\n"
        "image, video, shot = sys.argv[1:]\n"
        "picture = read_image(image, 'background')\n"
        "source = open_source(video)\n"
        "frames = [source.read() for _ in range(4)]\n"
        "save_image(shot, frames[-1][0], 'screenshot')\n"
        "print(picture.shape, [frame.shape for frame, _ in frames])\n"
    )
    argv = [os.fsencode(a) for a in (image, video, shot)]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert (
        done.stdout.decode().split()
        == "(48, 64, 3) [(48, 64, 3), (48, 64, 3), (48, 64, 3), (48, 64, 3)]".split()
    )
    assert cv2.imdecode(np.fromfile(shot, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_a_one_frame_video_loops_like_any_other(tmp_path):
    """OpenCV cannot rewind a one-frame video (the read after seeking to 0 fails): the view ended
    after its first frame."""
    from .test_ray_parts import write_video

    write_video(tmp_path / "one.avi", 1, "MJPG", (64, 48))
    source = open_source(tmp_path / "one.avi")
    frames = [source.read() for _ in range(3)]
    source.close()
    assert all(frame is not None for frame in frames)
    assert [stamp for _, stamp in frames] == sorted({stamp for _, stamp in frames})
    assert all(np.array_equal(frames[0][0], frame) for frame, _ in frames)
