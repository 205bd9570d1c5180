"""``gpu-seg segment --ray`` and ``gpu_seg.distributed.segment_on_ray`` on a real local Ray.

Ray runs in a child process of its own (spawned once for the module; 2 CPUs, a 200 MB object store,
no dashboard, loopback only; shut down at the end), so that its threads and memory arenas never
touch the rest of the suite; each test sends it a function to run. The photos are scikit-image's
bundled ones, resized; the videos are written here. Every run is compared with the single-process
command on the same inputs: the same files, byte for byte, and the same manifest lines (but for
the timings). Faults are real: a worker process is killed with SIGKILL, a GL context is destroyed
with eglDestroyContext.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
if importlib.util.find_spec("ray") is None:
    pytest.skip('Ray is not installed (pip install "gpu_seg[ray]")', allow_module_level=True)

from gpu_seg.distributed.ledger import LEDGER_PREFIX  # noqa: E402
from gpu_seg.segmenter.batch import BatchSegmenter, find_inputs  # noqa: E402

from .segmenter_support import selfie_model  # noqa: E402
from .test_ray_parts import files_under, write_video  # noqa: E402

#: The local Ray of these tests: small, and on the loopback interface.
RAY_OPTIONS = {"num_cpus": 2, "object_store_memory": 200 * 1024 * 1024}
#: Longest a function sent to the Ray process may take.
RUN_TIMEOUT_S = 300


# ------------------------------------------------------------------------------ the Ray process
def _start_ray() -> None:
    """Initializer of the Ray process: a local Ray for the module (shut down when the process exits)."""
    from gpu_seg.distributed.session import LOCAL_RAY_OPTIONS, import_ray

    import_ray(local=True).init(**{**LOCAL_RAY_OPTIONS, **RAY_OPTIONS})


@pytest.fixture(scope="module")
def ray_process():
    """Runs functions in the Ray process: ``ray_process(fn, *args, **kwargs)``."""
    with ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_ray
    ) as pool:

        def run(fn, *args, **kwargs):
            return pool.submit(fn, *args, **kwargs).result(timeout=RUN_TIMEOUT_S)

        yield run


def _cli(argv: list[str]) -> tuple[int, str]:
    """``gpu-seg segment ARGV`` in the Ray process: exit status and stdout."""
    from gpu_seg.cli import segment

    parser = argparse.ArgumentParser(prog="gpu-seg segment")
    segment.add_arguments(parser)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = segment.run(parser.parse_args(argv))
    return status, stdout.getvalue()


def _segment(inputs, out, **options):
    from gpu_seg.distributed import segment_on_ray

    return segment_on_ray(inputs, out, **options)


def _segment_stopped_by_on_frame(inputs, out, **options):
    """``segment_on_ray`` whose ``on_frame`` raises at the 2nd frame, in the module's own Ray (as an
    application's), the exception kept (as a caller that logs it later keeps it); returns what was
    raised, and the run's Ray Data workers still alive 6 s later."""
    import ray

    from gpu_seg.distributed import segment_on_ray

    seen = []

    def on_frame(record):
        seen.append(record)
        if len(seen) == 2:
            raise LookupError("the application stops the run")

    kept = None
    try:
        segment_on_ray(inputs, out, on_frame=on_frame, **options)
    except LookupError as exc:
        kept = exc
    time.sleep(6)
    actors = ray._private.state.actors().values()  # the GCS's table: no dashboard needed
    alive = [a for a in actors if a["State"] == "ALIVE" and "MapWorker" in a["ActorClassName"]]
    return str(kept), len(alive)


def _segment_dataset(paths: list[str], out: str, **options):
    """A Ray Dataset of paths through ``segment_on_ray``; returns the report and the frames seen."""
    import ray

    from gpu_seg.distributed import segment_on_ray

    frames = []
    dataset = ray.data.from_items([{"path": p} for p in paths])
    return segment_on_ray(dataset, out, on_frame=frames.append, **options), len(frames)


def _segment_killing_a_worker(inputs, out: Path, masks: int, **options):
    """``segment_on_ray`` while a thread SIGKILLs a worker process in mid-task once ``masks`` mask
    files exist; returns the report and the pids killed.

    The run's ledger says which workers are inside a batch (they report before they start one and
    after they end it); the one that started its batch last is killed a few milliseconds later.
    """
    import ray

    from gpu_seg.distributed import segment_on_ray

    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(1 for _ in out.rglob("*.mask.png")) < masks:
            time.sleep(0.005)
        while time.monotonic() < deadline:
            names = [n for n in ray.util.list_named_actors() if n.startswith(LEDGER_PREFIX)]
            busy = ray.get(ray.get_actor(names[-1]).in_flight.remote()) if names else {}
            if busy:
                victim = max(busy.values(), key=lambda worker: worker["since"])["pid"]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    report = segment_on_ray(inputs, out, **options)
    watcher.join(5)
    return report, killed


# ------------------------------------------------------------------------------ inputs, references
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


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """A longer video (many ranges) and photos, with the single-process outputs."""
    root = tmp_path_factory.mktemp("long")
    _photos(root / "in", (400,))
    write_video(root / "in" / "walk.mp4", 72, size=(480, 360))
    _single_process([root / "in"], root / "single", backend="cpu")
    return root


# ------------------------------------------------------------------------------ tests
def test_cli_on_ray_writes_what_the_single_process_command_writes(ray_process, corpus, tmp_path):
    out = tmp_path / "ray"
    argv = [str(corpus / "in"), "--out", str(out), "--model", str(selfie_model()), "--confidence"]
    argv += ["--overlay", "--backend", "cpu", "--quiet", "--ray", "--workers", "2", "--frames-per-task", "6"]
    status, printed = ray_process(_cli, argv)
    assert status == 0
    assert_same_run(corpus / "single", out)
    assert "segmented 32 frames from 13/13 inputs" in printed
    # 12 images in 6 tasks, the video's 20 frames in 4
    assert "ray: 10 tasks on" in printed and "retries: 0; worker restarts: 0" in printed


def _address_problem_of_this_ray() -> tuple[str, str | None]:
    """In the Ray process: its cluster's address, and what ``address_problem`` says of it."""
    import ray

    from gpu_seg.distributed.session import address_problem

    address = ray.get_runtime_context().gcs_address
    return address, address_problem(address)


def test_a_real_ray_cluster_passes_the_address_check(ray_process):
    """The check that refuses open ports where no Ray answers lets a real cluster's address through."""
    address, problem = ray_process(_address_problem_of_this_ray)
    assert ":" in address and problem is None


def test_cli_rejects_ray_options_without_ray(tmp_path, capsys):
    from gpu_seg.cli import segment

    parser = argparse.ArgumentParser()
    segment.add_arguments(parser)
    assert (
        segment.run(parser.parse_args([str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "2"])) == 2
    )
    assert segment.run(parser.parse_args([str(tmp_path), "--out", "s3://bucket/masks"])) == 2
    err = capsys.readouterr().err
    assert "--workers need --ray" in err and "an output URI needs --ray" in err


def test_dataset_of_paths_to_a_pyarrow_uri(ray_process, corpus, tmp_path):
    images = sorted(str(p) for p in (corpus / "in").glob("*_320.*"))
    options = {"model": selfie_model(), "confidence": True, "overlay": True, "backend": "cpu"}
    report, frames = ray_process(_segment_dataset, images, (tmp_path / "masks").as_uri(), **options)
    assert report.ok and report.frames == len(images) == frames == 6
    assert sum(worker.frames for worker in report.workers.values()) == 6
    _single_process(images, tmp_path / "single", confidence=True, overlay=True, backend="cpu")
    assert_same_run(tmp_path / "single", tmp_path / "masks")


def test_a_killed_worker_has_its_tasks_rerun_and_every_input_is_written_once(
    ray_process, long_corpus, tmp_path
):
    out = tmp_path / "ray"
    options = {"model": selfie_model(), "backend": "cpu", "workers": 2, "frames_per_task": 6}
    report, killed = ray_process(_segment_killing_a_worker, [long_corpus / "in"], out, 6, **options)
    assert killed, "no worker was killed: the run ended before the watcher saw it"
    assert report.ok, report.failures
    assert report.restarts >= 1 and report.retries >= 1
    assert_same_run(long_corpus / "single", out)  # every frame once, in order, same bytes


def test_a_task_whose_worker_keeps_dying_fails_its_input_for_good(ray_process, long_corpus, tmp_path):
    out = tmp_path / "ray"
    options = {
        "model": selfie_model(),
        "backend": "cpu",
        "workers": 2,
        "frames_per_task": 6,
        "max_retries": 0,
    }
    report, killed = ray_process(_segment_killing_a_worker, [long_corpus / "in"], out, 6, **options)
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


def test_context_losses_in_workers_are_recovered_and_counted(ray_process, corpus, tmp_path):
    images = sorted((corpus / "in").glob("*_320.*"))
    options = {"model": selfie_model(), "backend": "gl", "workers": 1, "images_per_task": 1}
    report = ray_process(_segment, images, tmp_path / "ray", lose_context_every=2, **options)  # tasks 3, 5
    assert report.ok and report.frames == 6
    lines = _manifest(tmp_path / "ray")
    assert [line["backend"] for line in lines] == ["gl"] * 6  # recomputed on a new context
    assert report.context_losses == sum(line["context_losses"] for line in lines) >= 2
    for line in lines:  # the frames that met a loss are right, not zeros or stale: as on the CPU
        mask = cv2.imread(str(tmp_path / "ray" / line["outputs"][0]), cv2.IMREAD_UNCHANGED)
        on_cpu = cv2.imread(str(corpus / "single" / line["outputs"][0]), cv2.IMREAD_UNCHANGED)
        assert np.mean(mask == on_cpu) >= 0.999  # only near-ties may differ between GL and the CPU


_TOO_BIG_A_WORKER = """
import json, sys, time
from gpu_seg.distributed import segment_on_ray
from gpu_seg.errors import InputError
started = time.monotonic()
try:
    segment_on_ray([sys.argv[1]], sys.argv[2], model=sys.argv[3], cpus_per_worker=3,
                   ray_options={"num_cpus": 2})
except InputError as exc:
    print(json.dumps({"argument": exc.argument, "message": str(exc), "s": time.monotonic() - started}))
"""


def test_a_worker_the_local_ray_cannot_hold_is_an_input_error_not_a_hang(tmp_path):
    """3 CPUs per worker on a 2-CPU local Ray (or a GPU where there is none): Ray Data waited for
    a node that would never come, with no message."""
    from .subprocesses import run_script

    image = _photos(tmp_path / "in", (64,))[0]
    args = (str(image), str(tmp_path / "out"), str(selfie_model()))
    result = run_script(_TOO_BIG_A_WORKER, *args, timeout=150)
    assert result["argument"] == "cpus_per_worker" and "2 CPUs" in result["message"]


def test_sigterm_on_a_ray_run_stops_it_like_ctrl_c(tmp_path):
    """``gpu-seg segment --ray`` under SIGTERM (``timeout``, ``docker stop``): ray.init had replaced
    the command's handler (in C too), so the process died at once with nothing more written
    (exit -15 or 15). Now it stops as after Ctrl-C: exit 143, the lines of the photos that came
    back kept.
    (Results held for an earlier task still running: ``test_ray_parts``.)"""
    import subprocess
    import sys

    photos = _photos(tmp_path / "in", (64,))
    video = tmp_path / "in" / "long.avi"
    write_video(video, 20000, fourcc="MJPG", size=(64, 48))  # minutes of work: never done in time
    out = tmp_path / "out"
    argv = [*map(str, photos), str(video), "--out", str(out), "--model", str(selfie_model()), "--quiet"]
    argv += ["--backend", "cpu", "--ray", "--workers", "1", "--frames-per-task", "30000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpu_seg", "segment", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    manifest = out / "manifest.jsonl"
    try:
        deadline = time.monotonic() + 150
        while not manifest.is_file() or not manifest.read_text() or len(list(out.glob("long/*"))) < 5:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run wrote too little in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "terminated" in stderr
    listed = {name for line in _manifest(out) for name in line["outputs"]}
    assert listed and listed <= {f"{p.stem}.mask.png" for p in photos}  # the video's task never came back
    assert all((out / name).is_file() for name in listed)


def test_a_run_stopped_by_its_on_frame_stops_its_tasks_in_a_ray_that_goes_on(ray_process, corpus, tmp_path):
    """The module's Ray outlives the run, as an application's does: after ``on_frame`` raised, the
    run's Ray Data execution went on (its worker alive, its remaining tasks failing once the run's
    ledger was gone, a long traceback each) for as long as the exception was kept."""
    images = sorted((corpus / "in").glob("*.*g"))
    assert len(images) >= 10
    options = {"model": selfie_model(), "backend": "cpu", "workers": 1, "images_per_task": 1}
    raised, alive = ray_process(_segment_stopped_by_on_frame, images, tmp_path / "out", **options)
    assert raised == "the application stops the run"
    assert alive == 0
    lines = _manifest(tmp_path / "out")
    assert len(lines) >= 2 and all((tmp_path / "out" / line["outputs"][0]).is_file() for line in lines)
