"""``gpu-seg segment`` on the files a real folder holds: odd names, files OpenCV refuses, a full disk,
output folders inside input folders, signals, truncated videos. Nothing a bad input does may lose
the other inputs' outputs or leave files the manifest does not describe."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

from gpu_seg import models  # noqa: E402
from gpu_seg.models import ModelFetchError  # noqa: E402
from gpu_seg.segmenter.batch import find_inputs, output_names  # noqa: E402

from .segmenter_support import (  # noqa: E402
    environment,
    local_registry,
    manifest_lines,
    run_segment,
    selfie_model,
    write_wheel,
)
from .test_ray_parts import write_video  # noqa: E402


def _segment_on_cpu(*inputs: str, out: Path) -> int:
    """``gpu-seg segment INPUTS --out OUT`` with the selfie model on the CPU backend, quiet."""
    options = ["--model", str(selfie_model()), "--backend", "cpu", "--quiet"]
    return run_segment([*inputs, "--out", str(out), *options])


def _photo(path: Path, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Write a small real photo to ``path`` (PNG); return its RGB pixels."""
    pixels = np.ascontiguousarray(cv2.resize(skdata.astronaut(), size))
    assert cv2.imwrite(str(path), pixels[..., ::-1])
    return pixels


def _files(out: Path) -> set[str]:
    """Every file under ``out`` but the manifest, relative, ``/``-separated."""
    return {
        path.relative_to(out).as_posix()
        for path in out.rglob("*")
        if path.is_file() and path.name != "manifest.jsonl"
    }


def _listed(out: Path) -> set[str]:
    return {name for line in manifest_lines(out) for name in line["outputs"]}


def _cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gpu_seg", "segment", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_file_name_that_is_not_utf8_is_segmented_like_any_other(tmp_path):
    """Latin-1 names (old archives, SMB shares) reach OpenCV as str with lone surrogates, on which
    its bindings segfaulted: the whole run died with no summary."""
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = _photo(folder / "a.png")
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    with open(odd, "wb") as stream:
        stream.write((folder / "a.png").read_bytes())
    write_video(tmp_path / "clip.avi", 3, "MJPG", (64, 48))  # OpenCV's writer cannot take that name either
    os.rename(tmp_path / "clip.avi", os.path.join(os.fsencode(folder), b"clip\xe9.avi"))
    _photo(folder / "z.png")
    out = tmp_path / "out"
    proc = _cli(str(folder), "--out", str(out), "--model", str(selfie_model()), "--backend", "cpu", "--quiet")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {stdout[-2000:]}{stderr[-2000:]}"
    assert "from 4/4 inputs" in stdout
    odd_mask = os.path.join(os.fsencode(out), b"caf\xe9.mask.png")
    with open(odd_mask, "rb") as stream:
        assert stream.read() == (out / "a.mask.png").read_bytes()  # the same pixels as a.png
    assert cv2.imread(str(out / "a.mask.png"), cv2.IMREAD_UNCHANGED).shape == pixels.shape[:2]
    video_masks = os.listdir(os.path.join(os.fsencode(out), b"clip\xe9"))
    assert sorted(video_masks) == [b"000000.mask.png", b"000001.mask.png", b"000002.mask.png"]


def _huge_header_png(path: Path, side: int = 40000) -> None:
    """A PNG whose header says ``side`` x ``side`` (a large scan), its pixel data cut short: OpenCV
    raises ``cv2.error`` (CV_IO_MAX_IMAGE_PIXELS) instead of returning None."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * (3 * side + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_an_image_opencv_raises_on_is_one_failed_input(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png")
    _huge_header_png(folder / "b.png")
    _photo(folder / "c.png")
    out = tmp_path / "out"
    assert _segment_on_cpu(str(folder), out=out) == 1
    lines = manifest_lines(out)
    assert [Path(line["input"]).name for line in lines] == ["a.png", "b.png", "c.png"]
    assert [bool(line.get("error")) for line in lines] == [False, True, False]
    assert lines[1]["error"].startswith("OSError: ") and "b.png" in lines[1]["error"]
    assert (out / "c.mask.png").is_file()
    captured = capsys.readouterr()
    assert f"failed: {folder / 'b.png'}" in captured.err and "from 2/3 inputs" in captured.out


def test_a_full_disk_fails_the_input_and_leaves_no_partial_file(tmp_path, capsys):
    """ENOSPC on an output file (``/dev/full`` behind the file being written): that input fails,
    its half-written file is removed (it would keep the disk full), the others are written."""
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png")
    _photo(folder / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.confidence.npy.partial").symlink_to("/dev/full")
    argv = [str(folder), "--out", str(out), "--model", str(selfie_model()), "--confidence", "--quiet"]
    assert run_segment([*argv, "--backend", "cpu"]) == 1
    lines = manifest_lines(out)
    assert [bool(line.get("error")) for line in lines] == [True, False]
    assert "No space left on device" in lines[0]["error"]
    assert not list(out.glob("*.partial")) and not (out / "a.confidence.npy").exists()
    assert {"b.mask.png", "b.confidence.npy"} <= _files(out)
    assert "failed inputs: 1" in capsys.readouterr().out


def test_a_manifest_that_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").symlink_to("/dev/full")
    rc = run_segment(
        [str(folder), "--out", str(out), "--model", str(selfie_model()), "--backend", "cpu", "--quiet"]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "manifest" in err and "No space left on device" in err


def test_an_output_folder_inside_an_input_folder_is_not_read_as_input(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.png")
    out = photos / "masks"
    argv = [str(photos), "--out", str(out), "--model", str(selfie_model()), "--overlay", "--backend", "cpu"]
    assert run_segment([*argv, "--quiet"]) == 0
    assert run_segment([*argv, "--quiet"]) == 0  # a second run: its own masks are no inputs
    assert "from 1/1 inputs" in capsys.readouterr().out
    assert not [name for name in _files(out) if ".mask.mask" in name or ".overlay.mask" in name]
    assert find_inputs([photos], output_folders=[out]) == [photos / "a.png"]


def test_an_output_folder_that_is_the_input_folder_reads_its_photos_not_its_masks(tmp_path, capsys):
    """``gpu-seg segment photos --out photos``: the photos are inputs (excluding the whole output
    folder found nothing), the masks and overlays written there are not."""
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    _photo(photos / "a.png")
    _photo(photos / "more" / "b.png")
    assert _segment_on_cpu(str(photos), "--overlay", out=photos) == 0
    assert _segment_on_cpu(str(photos), "--overlay", out=photos) == 0  # its masks are no inputs
    assert capsys.readouterr().out.count("from 2/2 inputs") == 2
    assert find_inputs([photos], output_folders=[photos]) == [photos / "a.png", photos / "more" / "b.png"]


def test_an_output_folder_that_cannot_be_listed_names_outputs_as_before(tmp_path):
    """Listing the folder for the names of earlier runs raised where the folder cannot be listed
    (write-only permissions; here a name too long, another OSError, since root lists anything)."""
    from gpu_seg.segmenter.files import LocalOutput

    (tmp_path / "file").write_text("")
    assert LocalOutput(tmp_path / "file").names_in_use() == set()  # NotADirectoryError
    assert LocalOutput(tmp_path / ("x" * 300)).names_in_use() == set()  # ENAMETOOLONG


@pytest.mark.parametrize("stem", [".", "..", "manifest.jsonl"])
def test_output_names_stay_inside_the_output_folder(stem):
    name = output_names([f"/videos/{stem}.avi"])[0]
    assert name not in (".", "..", "", "manifest.jsonl") and "/" not in name


def test_a_video_named_dot_dot_writes_inside_the_output_folder(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    write_video(tmp_path / "...avi", 2, "MJPG", (64, 48))
    out = parent / "out"
    assert (
        run_segment([str(tmp_path / "...avi"), "--out", str(out), "--model", str(selfie_model()), "--quiet"])
        == 0
    )
    assert sorted(path.name for path in parent.iterdir()) == ["out"]
    assert _files(out) == _listed(out) and len(_listed(out)) == 2


def test_a_fifo_is_reported_as_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    assert run_segment([str(fifo), "--out", str(out), "--model", str(selfie_model()), "--quiet"]) == 1
    assert "not a regular file" in manifest_lines(out)[0]["error"]


def test_symbolic_links_to_folders_are_not_followed(tmp_path):
    """A link to a parent folder pulled in its siblings (another run's masks), two links to one
    folder segmented its files twice; a link to ``/`` would walk the file system. Links to files
    are read."""
    folder = tmp_path / "in"
    (folder / "real").mkdir(parents=True)
    _photo(folder / "real" / "a.png")
    (tmp_path / "elsewhere").mkdir()
    _photo(tmp_path / "elsewhere" / "b.png")
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (folder / "twice").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (folder / "real" / "parent").symlink_to(tmp_path, target_is_directory=True)
    (folder / "c.png").symlink_to(tmp_path / "elsewhere" / "b.png")
    assert find_inputs([folder]) == [folder / "c.png", folder / "real" / "a.png"]


def test_a_missing_model_file_is_named_plainly(tmp_path, capsys):
    image = tmp_path / "a.png"
    _photo(image)
    rc = run_segment([str(image), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nope.tflite")])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"cannot read the model {tmp_path / 'nope.tflite'}:" in err and "PosixPath" not in err


def test_a_model_cache_that_cannot_be_written_is_a_model_fetch_error(tmp_path):
    members = {
        spec.member: selfie_model(landscape).read_bytes() for landscape, spec in models.SELFIE_MODELS.items()
    }
    write_wheel(tmp_path / "wheels", "0.10.21", members)
    (tmp_path / "file").write_text("not a folder")
    with environment(
        {**local_registry(tmp_path / "wheels"), "GPU_SEG_CACHE_DIR": str(tmp_path / "file" / "cache")}
    ):
        with pytest.raises(ModelFetchError, match="cache"):
            models.selfie_segmenter()


def test_a_model_cache_that_cannot_be_written_is_found_before_any_download(tmp_path, caplog):
    """The cache was first touched after ``pip download``: every call downloaded a mediapipe wheel
    (tens of MB on a fresh machine) before saying that it cannot be stored."""
    (tmp_path / "file").write_text("not a folder")
    caplog.set_level(logging.INFO, logger="gpu_seg")
    with environment({"GPU_SEG_CACHE_DIR": str(tmp_path / "file" / "cache")}):
        with pytest.raises(ModelFetchError, match="GPU_SEG_CACHE_DIR"):
            models.selfie_segmenter()
    assert not [record for record in caplog.records if "fetching" in record.getMessage()]


def _wait_for_lines(out: Path, lines: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    manifest = out / "manifest.jsonl"
    while time.monotonic() < deadline:
        if manifest.is_file() and manifest.read_text().count("\n") >= lines:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail("the run wrote no manifest lines in time")


def test_sigterm_ends_a_run_like_ctrl_c_with_a_consistent_manifest(tmp_path):
    """``timeout``, ``docker stop``, Slurm and systemd send SIGTERM: the run stops between frames,
    every file written has its manifest line, and the exit status says it was terminated."""
    video = tmp_path / "long.avi"
    write_video(video, 400, "MJPG", (64, 48))
    out = tmp_path / "out"
    proc = _cli(str(video), "--out", str(out), "--model", str(selfie_model()), "--backend", "cpu", "--quiet")
    _wait_for_lines(out, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "terminated" in stderr and "Traceback" not in stderr
    assert _files(out) == _listed(out)
    assert not list(out.rglob("*.partial"))


def test_an_interrupted_run_says_what_it_did_and_which_inputs_failed(tmp_path):
    """After Ctrl-C the run printed only "interrupted": the inputs that had failed before (listed at
    the end of a full run) and what was segmented went unsaid."""
    (tmp_path / "a_broken.png").write_bytes(b"not a picture")
    write_video(tmp_path / "long.avi", 400, "MJPG", (64, 48))
    out = tmp_path / "out"
    model = str(selfie_model())
    proc = _cli(str(tmp_path), "--out", str(out), "--model", model, "--backend", "cpu", "--quiet")
    _wait_for_lines(out, 4, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"failed: {tmp_path / 'a_broken.png'}: " in stderr and "Traceback" not in stderr
    frames = len(manifest_lines(out)) - 1
    assert f"before the interrupt: segmented {frames} frames from 0/2 inputs" in stderr, stderr[-2000:]
    assert "failed inputs: 1" in stderr and stderr.rstrip().endswith("interrupted")


def test_a_killed_run_leaves_at_most_the_frame_in_progress_unlisted(tmp_path):
    """SIGKILL cannot be handled: the manifest is flushed after every frame, so at most the frame
    being written when the process died has files without a line."""
    video = tmp_path / "long.avi"
    write_video(video, 400, "MJPG", (64, 48))
    out = tmp_path / "out"
    proc = _cli(str(video), "--out", str(out), "--model", str(selfie_model()), "--backend", "cpu", "--quiet")
    _wait_for_lines(out, 3, proc)
    time.sleep(0.3)
    proc.kill()
    proc.communicate(timeout=60)
    listed = _listed(out)
    assert all((out / name).is_file() for name in listed)
    unlisted = {name for name in _files(out) if not name.endswith(".partial")} - listed
    assert len(unlisted) <= 1, sorted(unlisted)


def test_a_video_that_decodes_short_of_its_frame_count_is_a_failed_input(tmp_path, capsys):
    """A video that decodes fewer frames than its container announces (here the second half of an
    interrupted download into a preallocated file: zeros, the length right): the frames decoded are
    written, and the input is reported failed, not processed."""
    video = tmp_path / "clip.avi"
    write_video(video, 40, "MJPG", (64, 48))
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    capture = cv2.VideoCapture(str(cut))
    announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert announced == 40
    out = tmp_path / "out"
    assert _segment_on_cpu(str(cut), out=out) == 1
    lines = manifest_lines(out)
    decoded = [line for line in lines if not line.get("error")]
    assert 0 < len(decoded) < 40
    assert "40" in lines[-1]["error"] and lines[-1]["input"] == str(cut)
    assert "failed inputs: 1" in capsys.readouterr().out


def test_a_later_run_into_the_same_folder_does_not_overwrite_earlier_outputs(tmp_path):
    """Two runs, two different ``photo.png`` (and a video each), one ``--out``: the second run's
    names avoid those the folder holds, so every manifest line still describes its own files."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _photo(first / "photo.png", (128, 128))
    _photo(second / "photo.png", (70, 50))
    write_video(first / "clip.avi", 3, "MJPG", (64, 48))
    write_video(second / "clip.avi", 2, "MJPG", (48, 32))
    out = tmp_path / "out"
    model = str(selfie_model())
    assert run_segment([str(first), "--out", str(out), "--model", model, "--backend", "cpu", "--quiet"]) == 0
    assert run_segment([str(second), "--out", str(out), "--model", model, "--backend", "cpu", "--quiet"]) == 0
    lines = manifest_lines(out)
    outputs = [name for line in lines for name in line["outputs"]]
    assert len(outputs) == len(set(outputs)) == 7  # 3 + 1 frames, then 2 + 1
    assert _files(out) == set(outputs)
    widths = {str(first): (128, 64), str(second): (70, 48)}  # (photo, video frames)
    for line in lines:  # each line's mask has its own input's size
        width = widths[str(Path(line["input"]).parent)][line["frame"] is not None]
        mask = cv2.imread(str(out / line["outputs"][0]), cv2.IMREAD_UNCHANGED)
        assert mask.shape[1] == width, line


def test_names_in_use_are_read_from_the_output_folder(tmp_path):
    from gpu_seg.distributed.storage import open_output

    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    names = (
        "a.mask.png",
        "b.confidence.npy",
        "c.overlay.png",
        "d.mask.png.partial",
        "manifest.jsonl",
        "e.txt",
    )
    for name in names:
        (out / name).write_bytes(b"x")
    assert open_output(out).names_in_use() == {"a", "b", "c", "clip"}
    pytest.importorskip("pyarrow.fs", reason="pyarrow is not installed")
    assert open_output(out.as_uri()).names_in_use() == {"a", "b", "c", "clip"}
    assert open_output(tmp_path / "missing").names_in_use() == set()
    assert open_output((tmp_path / "missing").as_uri()).names_in_use() == set()


def test_the_ray_drivers_manifest_fails_with_a_manifest_error(tmp_path):
    from gpu_seg.distributed.storage import Manifest
    from gpu_seg.segmenter.files import ManifestError

    (tmp_path / "manifest.jsonl").symlink_to("/dev/full")
    manifest = Manifest(tmp_path)
    manifest.write('{"input": "a.png"}')
    with pytest.raises(ManifestError, match="No space left on device"):
        manifest.flush()
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "manifest.jsonl").mkdir()
    with pytest.raises(ManifestError, match="cannot open the manifest"):
        Manifest(tmp_path / "folder")


def test_a_failing_on_frame_callback_stops_the_run_with_its_own_error(tmp_path):
    """The application's callback raising is its bug, not the input's failure: it is raised, and
    the frame it was called for keeps its manifest line."""
    from gpu_seg.segmenter.batch import BatchSegmenter

    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png")
    _photo(folder / "b.png")

    def callback(record):
        raise ZeroDivisionError("the application's bug")

    out = tmp_path / "out"
    with BatchSegmenter(selfie_model().read_bytes(), out, backend="cpu", on_frame=callback) as engine:
        with pytest.raises(ZeroDivisionError):
            engine.run(find_inputs([folder]))
    assert [line.get("error") for line in manifest_lines(out)] == [None]
    assert _files(out) == _listed(out) == {"a.mask.png"}


def test_a_sigterm_while_a_frame_is_written_lets_it_finish_with_its_record(tmp_path):
    """SIGTERM (or Ctrl-C) between a frame's files and its manifest line left the files unlisted
    (seen in CI: ``long/000005.mask.png`` on disk, not in the manifest). Now both signals are held
    while a frame's files are written and its record handed on, and act right after."""
    from gpu_seg.cli import Terminated, _interrupts
    from gpu_seg.segmenter.batch import FrameSegmenter, LocalOutput, WorkItem

    class SignalledOutput(LocalOutput):
        def write(self, relative: str, data: bytes) -> None:
            super().write(relative, data)
            os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` would, in mid-frame

    image = tmp_path / "a.png"
    _photo(image)
    records = []
    engine = FrameSegmenter(selfie_model().read_bytes(), SignalledOutput(tmp_path / "out"), backend="cpu")
    engine.on_written = records.append
    with engine, _interrupts(), pytest.raises(Terminated):
        list(engine.run(WorkItem(str(image), "a")))
    assert [record.outputs for record in records] == [("a.mask.png",)]
    assert (tmp_path / "out" / "a.mask.png").is_file()


# ------------------------------------------------------------------------------ damaged files
def _jpeg(pixels: np.ndarray, progressive: bool = False) -> bytes:
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return data.tobytes()


def _with_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """``jpeg`` with an APP1 segment right after its SOI that holds a whole JPEG, end marker included,
    as an EXIF thumbnail does."""
    payload = b"Exif\0\0" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _jpegs(pixels: np.ndarray) -> dict[str, bytes]:
    small = _jpeg(np.ascontiguousarray(pixels[::4, ::4]))
    return {
        "baseline": _jpeg(pixels),
        "progressive": _jpeg(pixels, progressive=True),
        "thumbnail": _with_thumbnail(_jpeg(pixels), small),
    }


@pytest.mark.parametrize("kind", ["baseline", "progressive", "thumbnail"])
@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_a_truncated_jpeg_is_a_failed_input_not_a_half_grey_photo(tmp_path, capsys, kind, kept):
    """OpenCV decodes a cut JPEG with a warning and grey where the data ended: the run segmented that
    picture and said nothing. A JPEG's scans must now end in its end-of-image marker (a thumbnail's
    marker, inside its APP1 segment, does not count)."""
    data = _jpegs(skdata.astronaut())[kind]
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * kept)])
    out = tmp_path / "out"
    assert _segment_on_cpu(str(path), out=out) == 1
    (line,) = manifest_lines(out)
    assert "truncated" in line["error"] and line["input"] == str(path)
    assert _files(out) == set()


def test_whole_jpegs_are_read_with_thumbnails_progressive_scans_and_trailing_data(tmp_path):
    """What the truncation check must let through: each of these decodes whole."""
    for kind, data in _jpegs(skdata.astronaut()).items():
        (tmp_path / f"{kind}.jpg").write_bytes(data)
    (tmp_path / "trailer.jpg").write_bytes(_jpeg(skdata.astronaut()) + b"MotionPhoto_Data" + bytes(64))
    out = tmp_path / "out"
    assert _segment_on_cpu(str(tmp_path), out=out) == 0
    assert _files(out) == {f"{name}.mask.png" for name in ("baseline", "progressive", "thumbnail", "trailer")}


def test_a_damaged_image_is_never_read_as_a_video(tmp_path):
    """A still image OpenCV and imageio both refuse went on to FFmpeg's video reader, which decodes a
    cut interlaced GIF as every other row and wrote it as ``NAME/000000.mask.png``, exit 0."""
    from PIL import Image

    path = tmp_path / "cut.gif"
    Image.fromarray(skdata.astronaut()).save(path, interlace=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.3)])
    out = tmp_path / "out"
    assert _segment_on_cpu(str(path), out=out) == 1
    (line,) = manifest_lines(out)
    assert "truncated or corrupt" in line["error"] and "GIF" in line["error"]
    assert _files(out) == set()


def test_a_float_tiff_is_refused_by_name_not_read_as_a_video(tmp_path):
    path = tmp_path / "depth.tif"
    assert cv2.imwrite(str(path), np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64))
    out = tmp_path / "out"
    assert _segment_on_cpu(str(path), out=out) == 1
    (line,) = manifest_lines(out)
    assert "float32" in line["error"] and line["frame"] is None
    assert _files(out) == set()


def test_a_damaged_png_read_by_imageio_keeps_its_exif_orientation(tmp_path):
    """A PNG whose last chunk's checksum is cut is refused by libpng and read by imageio, which
    ignored the EXIF orientation OpenCV applies: a mask on its side, of another size."""
    from PIL import Image

    upright = tmp_path / "upright.png"
    Image.fromarray(np.ascontiguousarray(cv2.resize(skdata.astronaut(), (120, 160)))).save(upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    stored = tmp_path / "stored.png"
    Image.open(upright).transpose(Image.Transpose.ROTATE_90).save(stored, exif=exif.tobytes())
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(stored.read_bytes()[:-2])
    assert cv2.imread(str(damaged)) is None and cv2.imread(str(stored)).shape == (160, 120, 3)
    out = tmp_path / "out"
    assert _segment_on_cpu(str(stored), str(damaged), out=out) == 0
    masks = {
        name: cv2.imread(str(out / f"{name}.mask.png"), cv2.IMREAD_UNCHANGED)
        for name in ("stored", "damaged")
    }
    assert masks["damaged"].shape == masks["stored"].shape == (160, 120)
    assert np.array_equal(masks["damaged"], masks["stored"])


@pytest.mark.parametrize("kept", [0.5, 0.97])
def test_a_truncated_avi_is_refused_by_its_own_length(tmp_path, kept):
    """A cut AVI whose last few frames were missing passed (2 frames or 1% were allowed), with its
    last frame half decoded. A RIFF file states its length: a shorter file is cut."""
    video = tmp_path / "clip.avi"
    write_video(video, 30, "MJPG", (64, 48))
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * kept)])
    out = tmp_path / "out"
    assert _segment_on_cpu(str(cut), out=out) == 1
    (line,) = manifest_lines(out)
    assert "truncated" in line["error"] and f"{len(data)}" in line["error"]
    assert _files(out) == set()


def test_a_truncated_mp4_is_refused_by_its_box_sizes(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, 30, "mp4v", (64, 48))
    data = video.read_bytes()
    assert data[4:8] == b"ftyp"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.97)])
    out = tmp_path / "out"
    assert _segment_on_cpu(str(cut), out=out) == 1
    (line,) = manifest_lines(out)
    assert "truncated" in line["error"]
    assert _files(out) == set()


def test_the_overlay_blends_in_little_memory_and_exactly():
    """The overlay blended the whole picture in float64: 8 bytes per channel in each of several
    temporaries (about 30 GB for a 20000 x 20000 photo, 10x the time of the blend it needs)."""
    import tracemalloc

    from gpu_seg.segmenter.files import _FOREGROUND_TINT, _PALETTE, overlay

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (1200, 1600, 3), np.uint8)
    one_class = rng.integers(0, 2, image.shape[:2], np.uint8) * 255
    classes = rng.integers(0, 30, image.shape[:2], np.uint8)
    cases = [
        (True, one_class, one_class == 0, np.broadcast_to(_FOREGROUND_TINT, image.shape)),
        (False, classes, classes != 0, _PALETTE[1 + (classes.astype(np.intp) - 1) % (len(_PALETTE) - 1)]),
    ]
    for single, mask, tinted, tint in cases:
        tracemalloc.start()
        got = overlay(image, mask, single)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 * image.nbytes, peak / image.nbytes  # the result, and a few bands' temporaries
        want = np.where(tinted[..., None], np.round(image * 0.5 + tint * 0.5), image).astype(np.uint8)
        assert got.dtype == np.uint8 and np.array_equal(got, want)


def test_mp4_and_jpeg_files_with_harmless_extra_bytes_are_read(tmp_path):
    """A complete MP4 followed by text (a tool's trailer) was refused as truncated: the text was
    read as a box of gigabytes. A JPEG with stray bytes between header segments (libjpeg skips them
    with a warning, same pixels) was refused as truncated."""
    video = tmp_path / "clip.mp4"
    write_video(video, 5, "mp4v", (64, 48))
    video.write_bytes(video.read_bytes() + b" trailer written by some tool, not a box\n" * 3)
    jpeg = _jpeg(skdata.astronaut())
    at = jpeg.index(b"\xff\xdb")  # the first quantisation table, after APP0
    (tmp_path / "padded.jpg").write_bytes(jpeg[:at] + b"\x00\x00" + jpeg[at:])
    out = tmp_path / "out"
    assert _segment_on_cpu(str(tmp_path), out=out) == 0
    assert "padded.mask.png" in _files(out) and len([n for n in _files(out) if n.startswith("clip/")]) == 5


def test_a_cut_tiff_is_reported_as_damaged_not_as_float_pixels(tmp_path):
    path = tmp_path / "photo.tif"
    assert cv2.imwrite(str(path), np.full((64, 80, 3), 100, np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert _segment_on_cpu(str(path), out=out) == 1
    (line,) = manifest_lines(out)
    assert "truncated or corrupt" in line["error"], line["error"]


def test_a_frame_interrupted_while_written_is_counted_in_the_report(tmp_path):
    """A signal held during a frame's write is raised once the frame is on disk and listed: the
    report (printed as 'before the interrupt: ...') left that frame out."""
    import signal as signals

    from gpu_seg.cli import _interrupts
    from gpu_seg.segmenter.batch import BatchSegmenter, LocalOutput

    class SignalledOutput(LocalOutput):
        writes = 0

        def write(self, relative: str, data: bytes) -> None:
            super().write(relative, data)
            SignalledOutput.writes += 1
            if SignalledOutput.writes == 3:
                os.kill(os.getpid(), signals.SIGINT)

    video = tmp_path / "clip.avi"
    write_video(video, 10, "MJPG", (64, 48))
    engine = BatchSegmenter(selfie_model().read_bytes(), tmp_path / "out", backend="cpu")
    engine._output = engine._engine.output = SignalledOutput(tmp_path / "out")
    with engine, _interrupts(), pytest.raises(KeyboardInterrupt):
        engine.run([video])
    assert len(manifest_lines(tmp_path / "out")) == 3
    assert engine.last_report.frames == 3


def test_a_damaged_file_read_from_elsewhere_is_named_as_the_user_gave_it(tmp_path):
    """Ray workers read inputs by absolute path (``WorkItem.source``): their errors named the absolute
    path where the single-process run names the input as given, so the manifests differed."""
    from gpu_seg.segmenter.batch import FrameSegmenter, LocalOutput, WorkItem

    data = _jpeg(skdata.astronaut())
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    item = WorkItem("photos/cut.jpg", "cut", source=str(tmp_path / "cut.jpg"))
    with FrameSegmenter(selfie_model().read_bytes(), LocalOutput(tmp_path / "out"), backend="cpu") as engine:
        with pytest.raises(OSError) as info:
            list(engine.run(item))
    assert "photos/cut.jpg" in str(info.value) and str(tmp_path) not in str(info.value)
