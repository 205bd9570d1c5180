"""``gpu-seg segment --ray`` and ``gpu_seg.distributed.segment_on_ray`` on a real local Ray.

One Ray instance serves the module (2 CPUs, a 200 MB object store, no dashboard, loopback only) and
is shut down at its end. The photos are scikit-image's bundled ones, resized; the videos are
written here. Every run is compared with the single-process command on the same inputs: the same
files, byte for byte, and the same manifest lines (but for the timings). Faults are real: a worker
process is killed with SIGKILL, a GL context is destroyed with eglDestroyContext.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

from gpu_seg.cli import segment  # noqa: E402
from gpu_seg.distributed import segment_on_ray  # noqa: E402
from gpu_seg.distributed.ledger import LEDGER_PREFIX  # noqa: E402
from gpu_seg.distributed.session import RayUnavailableError, import_ray, ray_session  # noqa: E402
from gpu_seg.segmenter.batch import BatchSegmenter, find_inputs  # noqa: E402

from .segmenter_support import selfie_model  # noqa: E402
from .test_ray_parts import files_under, write_video  # noqa: E402

try:
    import_ray(local=True)  # before Ray's first import: its servers listen on loopback only
except RayUnavailableError as exc:
    pytest.skip(f"Ray is not installed: {exc}", allow_module_level=True)

#: The local Ray of these tests: small, and on the loopback interface.
RAY_OPTIONS = {"num_cpus": 2, "object_store_memory": 200 * 1024 * 1024}


@pytest.fixture(scope="module")
def ray():
    with ray_session(None, RAY_OPTIONS) as ray:
        yield ray


def _photos(folder: Path, sizes: tuple[int, ...]) -> list[Path]:
    """Real photos at several widths, as JPEG and PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    left, right, _ = skdata.stereo_motorcycle()
    photos = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(), "chelsea": skdata.chelsea()}
    photos |= {"rocket": skdata.rocket(), "motorcycle_left": left, "motorcycle_right": right}
    written = []
    for width in sizes:
        for name, pixels in photos.items():
            height = round(pixels.shape[0] * width / pixels.shape[1])
            path = folder / f"{name}_{width}.{'png' if width % 2 else 'jpg'}"
            cv2.imwrite(str(path), np.ascontiguousarray(cv2.resize(pixels, (width, height))[..., ::-1]))
            written.append(path)
    return written


def _single_process(inputs, out: Path, **options) -> None:
    with BatchSegmenter(selfie_model().read_bytes(), out, **options) as engine:
        assert engine.run(find_inputs(inputs)).ok


def _manifest(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]


def _without_timings(lines: list[dict]) -> list[dict]:
    return [{key: value for key, value in line.items() if key != "ms"} for line in lines]


def assert_same_run(expected: Path, got: Path) -> None:
    """Same files, byte for byte; same manifest but for the timings; nothing half-written."""
    reference, produced = files_under(expected), files_under(got)
    assert sorted(produced) == sorted(reference)
    assert [name for name in reference if produced[name] != reference[name]] == []
    assert _without_timings(_manifest(got)) == _without_timings(_manifest(expected))
    assert not list(got.rglob("*.partial"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Photos and a video split into several ranges, with the single-process outputs."""
    root = tmp_path_factory.mktemp("corpus")
    _photos(root / "in", (320, 481))
    write_video(root / "in" / "pan.mp4", 20)
    _single_process([root / "in"], root / "single", confidence=True, overlay=True, backend="cpu")
    return root


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu-seg segment")
    segment.add_arguments(parser)
    return segment.run(parser.parse_args(argv))


def test_cli_on_ray_writes_what_the_single_process_command_writes(ray, corpus, tmp_path, capsys):
    out = tmp_path / "ray"
    argv = [str(corpus / "in"), "--out", str(out), "--model", str(selfie_model()), "--confidence"]
    argv += ["--overlay", "--backend", "cpu", "--quiet", "--ray", "--workers", "2", "--frames-per-task", "6"]
    assert _run_cli(argv) == 0
    assert_same_run(corpus / "single", out)
    printed = capsys.readouterr().out
    assert "segmented 32 frames from 13/13 inputs" in printed
    assert "ray: 10 tasks on" in printed and "retries: 0; worker restarts: 0" in printed  # 12 images in 6


def test_cli_rejects_ray_options_without_ray(tmp_path, capsys):
    assert _run_cli([str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert _run_cli([str(tmp_path), "--out", "s3://bucket/masks"]) == 2
    err = capsys.readouterr().err
    assert "--workers need --ray" in err and "an output URI needs --ray" in err


def test_dataset_of_paths_to_a_pyarrow_uri(ray, corpus, tmp_path):
    images = sorted(str(p) for p in (corpus / "in").glob("*_320.*"))
    frames = []
    report = segment_on_ray(
        ray.data.from_items([{"path": p} for p in images]),
        (tmp_path / "masks").as_uri(),
        model=selfie_model(),
        confidence=True,
        overlay=True,
        backend="cpu",
        on_frame=frames.append,
    )
    assert report.ok and report.frames == len(images) == len(frames) == 6
    assert sum(worker.frames for worker in report.workers.values()) == 6
    _single_process(images, tmp_path / "single", confidence=True, overlay=True, backend="cpu")
    assert_same_run(tmp_path / "single", tmp_path / "masks")


def _ledger(ray):
    """The running distributed run's ledger actor (named, in this driver's namespace), or None."""
    names = [n for n in ray.util.list_named_actors() if n.startswith(LEDGER_PREFIX)]
    return ray.get_actor(names[-1]) if names else None


def _kill_a_busy_worker_when(ray, out: Path, masks: int, killed: list[int]) -> threading.Thread:
    """In the background: once ``masks`` mask files exist, SIGKILL a worker process in mid-task.

    The run's ledger says which workers are inside a batch (they report before they start one and
    after they end it); the one that started its batch last is killed, a few milliseconds later.
    """

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(1 for _ in out.rglob("*.mask.png")) < masks:
            time.sleep(0.005)
        while time.monotonic() < deadline:
            ledger = _ledger(ray)
            busy = ray.get(ledger.in_flight.remote()) if ledger is not None else {}
            if busy:
                victim = max(busy.values(), key=lambda worker: worker["since"])["pid"]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """A longer video (many ranges) and photos, with the single-process outputs."""
    root = tmp_path_factory.mktemp("long")
    _photos(root / "in", (400,))
    write_video(root / "in" / "walk.mp4", 72, size=(480, 360))
    _single_process([root / "in"], root / "single", backend="cpu")
    return root


def test_a_killed_worker_has_its_tasks_rerun_and_every_input_is_written_once(ray, long_corpus, tmp_path):
    out = tmp_path / "ray"
    killed: list[int] = []
    watcher = _kill_a_busy_worker_when(ray, out, 6, killed)
    report = segment_on_ray(
        [long_corpus / "in"], out, model=selfie_model(), backend="cpu", workers=2, frames_per_task=6
    )
    watcher.join(5)
    assert killed, "no worker was killed: the run ended before the watcher saw it"
    assert report.ok, report.failures
    assert report.restarts >= 1 and report.retries >= 1
    assert_same_run(long_corpus / "single", out)  # every frame once, in order, same bytes


def test_a_task_whose_worker_keeps_dying_fails_its_input_for_good(ray, long_corpus, tmp_path):
    out = tmp_path / "ray"
    killed: list[int] = []
    watcher = _kill_a_busy_worker_when(ray, out, 6, killed)
    report = segment_on_ray(
        [long_corpus / "in"],
        out,
        model=selfie_model(),
        backend="cpu",
        workers=2,
        frames_per_task=6,
        max_retries=0,
    )
    watcher.join(5)
    assert killed
    assert not report.ok and report.failures
    assert all(reason.startswith("WorkerLost") for _, reason in report.failures)
    lines = _manifest(out)
    errors = [line["input"] for line in lines if "error" in line]
    assert sorted(errors) == sorted({name for name, _ in report.failures})  # one error line per input
    frames = [(line["input"], line["frame"]) for line in lines if "error" not in line]
    assert len(frames) == len(set(frames)) == report.frames  # no frame written twice
    expected = {(line["input"], line["frame"]) for line in _manifest(long_corpus / "single")}
    failed = set(errors)
    assert {f for f in expected if f[0] not in failed} <= set(frames)  # no gap in the other inputs


def test_context_losses_in_workers_are_recovered_and_counted(ray, corpus, tmp_path):
    images = sorted((corpus / "in").glob("*_320.*"))
    report = segment_on_ray(
        images,
        tmp_path / "ray",
        model=selfie_model(),
        backend="gl",
        workers=1,
        images_per_task=1,
        lose_context_every=2,  # before the 3rd and the 5th task
    )
    assert report.ok and report.frames == 6
    lines = _manifest(tmp_path / "ray")
    assert [line["backend"] for line in lines] == ["gl"] * 6  # recomputed on a new context
    assert report.context_losses == sum(line["context_losses"] for line in lines) >= 2
    for line in lines:  # the frames that met a loss are right, not zeros or stale: as on the CPU
        mask = cv2.imread(str(tmp_path / "ray" / line["outputs"][0]), cv2.IMREAD_UNCHANGED)
        on_cpu = cv2.imread(str(corpus / "single" / line["outputs"][0]), cv2.IMREAD_UNCHANGED)
        assert np.mean(mask == on_cpu) >= 0.999  # only near-ties may differ between GL and the CPU
