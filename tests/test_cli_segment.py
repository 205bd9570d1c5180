"""``gpu-seg segment`` (gpu_seg.cli.segment, engine gpu_seg.segmenter.batch) on real photos and a video.

The parser is built here from the module (the integrator registers the command in gpu_seg.cli).
Written masks are compared with ImageSegmenter's results for the same pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

from gpu_seg.segmenter import ImageSegmenter  # noqa: E402
from gpu_seg.segmenter.batch import overlay  # noqa: E402

from .segmenter_support import environment, manifest_lines, run_segment, selfie_model, session_cache  # noqa: E402
from .test_cli import _env  # noqa: E402


@pytest.fixture
def photos(tmp_path):
    """Two photos on disk (PNG and JPEG) and their RGB pixels as OpenCV decodes them."""
    folder = tmp_path / "in"
    folder.mkdir()
    astronaut = skdata.astronaut()
    crop = np.ascontiguousarray(cv2.resize(astronaut, (333, 517))[:, :, :])
    cv2.imwrite(str(folder / "astronaut.png"), astronaut[..., ::-1])
    cv2.imwrite(str(folder / "crop.jpg"), crop[..., ::-1])
    decoded = {
        name: cv2.imread(str(folder / name))[..., ::-1].copy() for name in ("astronaut.png", "crop.jpg")
    }
    return folder, decoded


def test_images_masks_confidence_overlay_and_manifest(tmp_path, photos, capsys):
    folder, decoded = photos
    out = tmp_path / "out"
    model = selfie_model()
    rc = run_segment(
        [
            str(folder),
            "--out",
            str(out),
            "--model",
            str(model),
            "--confidence",
            "--overlay",
            "--backend",
            "cpu",
        ]
    )
    assert rc == 0
    lines = manifest_lines(out)
    assert [(line["input"], line["frame"]) for line in lines] == [
        (str(folder / "astronaut.png"), None),
        (str(folder / "crop.jpg"), None),
    ]
    with ImageSegmenter.create_from_model_path(model, output_category_mask=True, backend="cpu") as reference:
        for line, (name, pixels) in zip(lines, decoded.items(), strict=True):
            stem = name.split(".")[0]
            assert line["outputs"] == [f"{stem}.mask.png", f"{stem}.confidence.npy", f"{stem}.overlay.png"]
            assert line["backend"] == "cpu" and line["ms"] > 0
            expected = reference.segment(pixels)
            mask = cv2.imread(str(out / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(mask, expected.category_mask)
            np.testing.assert_array_equal(np.load(out / f"{stem}.confidence.npy"), expected.confidence_masks)
            tinted = cv2.imread(str(out / f"{stem}.overlay.png"))[..., ::-1]
            np.testing.assert_array_equal(tinted, overlay(pixels, expected.category_mask, one_class=True))
    assert 0.2 < np.mean(cv2.imread(str(out / "astronaut.mask.png"), cv2.IMREAD_UNCHANGED) == 0) < 0.9
    captured = capsys.readouterr()
    assert "segmented 2 frames from 2/2 inputs" in captured.out and "backend: cpu 2" in captured.out


def test_unreadable_input_is_reported_and_the_rest_still_run(tmp_path, photos, capsys):
    folder, _ = photos
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    argv = [str(broken), str(folder / "astronaut.png"), str(missing), "--out", str(out)]
    rc = run_segment([*argv, "--model", str(selfie_model()), "--quiet"])
    assert rc == 1
    lines = manifest_lines(out)
    assert [bool(line.get("error")) for line in lines] == [True, False, True]
    assert (out / "astronaut.mask.png").is_file()
    captured = capsys.readouterr()
    assert f"failed: {broken}" in captured.err and f"failed: {missing}" in captured.err
    assert "from 1/3 inputs" in captured.out and "failed inputs: 2" in captured.out


def _write_video(path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def test_video_frames_in_video_mode(tmp_path, capsys):
    astronaut = skdata.astronaut()
    frames = [np.ascontiguousarray(astronaut[4 * i : 4 * i + 300, 6 * i : 6 * i + 400]) for i in range(6)]
    video = tmp_path / "pan.avi"
    _write_video(video, frames)
    out = tmp_path / "out"
    rc = run_segment([str(video), "--out", str(out), "--model", str(selfie_model(landscape=True)), "--quiet"])
    assert rc == 0
    lines = manifest_lines(out)
    assert [line["frame"] for line in lines] == list(range(6))
    assert lines[0]["outputs"] == ["pan/000000.mask.png"]
    capture = cv2.VideoCapture(str(video))
    decoded = []
    while (frame := capture.read())[0]:
        decoded.append(frame[1][..., ::-1].copy())
    capture.release()
    with ImageSegmenter.create_from_model_path(
        selfie_model(landscape=True), output_category_mask=True, running_mode="video"
    ) as reference:
        for index, pixels in enumerate(decoded):
            expected = reference.segment_for_video(pixels, 100 * index)
            mask = cv2.imread(str(out / "pan" / f"{index:06d}.mask.png"), cv2.IMREAD_UNCHANGED)
            assert np.mean(mask == expected.category_mask) >= 0.9999
    assert "segmented 6 frames from 1/1 inputs" in capsys.readouterr().out


def test_default_model_and_name_collisions(tmp_path, photos):
    folder, _ = photos
    second = tmp_path / "other"
    second.mkdir()
    (second / "astronaut.jpg").write_bytes((folder / "crop.jpg").read_bytes())
    out = tmp_path / "out"
    selfie_model()  # in the session cache already: no download here
    with environment({"GPU_SEG_CACHE_DIR": str(session_cache())}):
        rc = run_segment(
            [str(folder / "astronaut.png"), str(second / "astronaut.jpg"), "--out", str(out), "--quiet"]
        )
    assert rc == 0
    assert [line["outputs"][0] for line in manifest_lines(out)] == [
        "astronaut.mask.png",
        "astronaut_jpg.mask.png",
    ]


def test_imageio_reads_what_opencv_cannot(tmp_path):
    iio = pytest.importorskip("imageio.v3", reason="imageio is not installed")
    icon = tmp_path / "astronaut.ico"
    iio.imwrite(icon, cv2.resize(skdata.astronaut(), (48, 48)))
    assert cv2.imread(str(icon)) is None
    pixels = np.ascontiguousarray(iio.imread(icon)[..., :3])
    out = tmp_path / "out"
    assert (
        run_segment(
            [str(icon), "--out", str(out), "--model", str(selfie_model()), "--quiet", "--backend", "cpu"]
        )
        == 0
    )
    with ImageSegmenter.create_from_model_path(
        selfie_model(), output_category_mask=True, backend="cpu"
    ) as seg:
        expected = seg.segment(pixels).category_mask
    np.testing.assert_array_equal(cv2.imread(str(out / "astronaut.mask.png"), cv2.IMREAD_UNCHANGED), expected)


def test_no_inputs_and_bad_model(tmp_path, capsys):
    assert run_segment([str(tmp_path / "empty-folder-*"), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    (tmp_path / "images").mkdir()
    assert run_segment([str(tmp_path / "images"), "--out", str(tmp_path / "out")]) == 1
    assert "no input files" in capsys.readouterr().err
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "bad.tflite").write_bytes(b"nope")
    assert (
        run_segment([str(image), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "bad.tflite")])
        == 1
    )
    assert "model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_segment(["--out", str(tmp_path / "out")])  # INPUT is required


@pytest.mark.parametrize("command", ["segment", "view"])
def test_without_opencv_the_message_says_what_to_install_once(tmp_path, photos, command):
    """No gpu_seg extra installs OpenCV: the message names a wheel, is printed once (the command's
    name was printed twice), and comes before any progress bar."""
    import subprocess
    import sys

    folder, _ = photos
    argv = [command, str(folder / "astronaut.png")]
    argv += ["--out", str(tmp_path / "out")] if command == "segment" else ["--frames", "1", "--hidden"]
    script = "\n".join(
        [
            "import sys",
            "sys.modules['cv2'] = None",
            "from gpu_seg.cli import main",
            "sys.exit(main(sys.argv[1:]))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "opencv-python-headless" in lines[0], done.stderr
    assert lines[0].count(f"gpu-seg {command}") == 1
