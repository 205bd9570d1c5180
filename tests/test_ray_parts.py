"""The parts of gpu_seg.distributed that run without Ray: the plan (names, video frame ranges), frame
ranges segmented apart giving the same bytes as the whole video, the GPU -> EGL device match, the
outputs (local folders and pyarrow URIs), the ordered manifest, and option checks.

The Ray runs themselves are in test_ray.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (it comes with mediapipe) is not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

from gpu_seg.distributed import (  # noqa: E402
    assign_egl_device,
    egl_cuda_devices,
    egl_device_for_gpu,
    plan_tasks,
    segment_on_ray,
)
from gpu_seg.distributed.plan import Task, images_per_task  # noqa: E402
from gpu_seg.distributed.report import RayReport, ResultCollector  # noqa: E402
from gpu_seg.distributed.storage import Manifest, open_output  # noqa: E402
from gpu_seg.errors import InputError  # noqa: E402
from gpu_seg.segmenter.batch import FrameSegmenter, LocalOutput, WorkItem, error_line, output_names  # noqa: E402

from .segmenter_support import environment, selfie_model  # noqa: E402


def write_video(path, count: int, fourcc: str = "mp4v", size: tuple[int, int] = (320, 240)) -> None:
    """A pan over the astronaut photo (``count`` frames), with inter-coded frames for mp4v."""
    astronaut = skdata.astronaut()
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (width, height))
    assert writer.isOpened()
    for i in range(count):
        j = (3 * i) % (512 - max(width, height))
        writer.write(np.ascontiguousarray(astronaut[j : j + height, j : j + width, ::-1]))
    writer.release()


def files_under(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.jsonl"
    }


# ------------------------------------------------------------------------------------------ plan
def test_plan_names_like_the_single_process_engine_groups_images_and_splits_videos(tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, 50, "MJPG")
    (tmp_path / "sub").mkdir()
    images = [tmp_path / "clip.png", tmp_path / "sub" / "clip.png", tmp_path / "a.jpg", tmp_path / "b.jpg"]
    inputs = [images[0], video, images[1], images[2], images[3], tmp_path / "missing.mp4"]
    tasks = plan_tasks(inputs, frames_per_task=16, images_per_task=2)
    names = output_names(inputs)
    assert names == ["clip", "clip_avi", "clip_png", "a", "b", "missing"]
    ranges = [([i.name for i in t.items], t.items[0].start, t.items[0].stop, t.frames) for t in tasks]
    assert ranges == [
        (["clip"], 0, None, 1),  # a video follows: the group closes early
        (["clip_avi"], 0, 16, 16),
        (["clip_avi"], 16, 32, 16),
        (["clip_avi"], 32, 48, 16),
        (["clip_avi"], 48, None, 2),  # the last range reads to the end, whatever the count said
        (["clip_png", "a"], 0, None, 2),
        (["b"], 0, None, 1),
        (["missing"], 0, None, 1),  # no frame count: one task, which will report the error
    ]
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert [t.items[0].input for t in tasks[:2]] == [str(p) for p in inputs[:2]]
    assert all(i.path.startswith("/") for t in tasks for i in t.items)
    for bad in ({"frames_per_task": 0}, {"images_per_task": 1.5}):
        with pytest.raises(InputError) as info:
            plan_tasks(inputs, **bad)
        assert info.value.argument == next(iter(bad))


def test_images_per_task_keeps_every_worker_busy():
    assert [images_per_task(n, 2) for n in (0, 1, 8, 9, 60, 240, 1000)] == [1, 1, 1, 2, 8, 30, 64]
    assert images_per_task(240, 1) == 60 and images_per_task(3, 0) == 1


def test_video_ranges_segmented_apart_write_the_same_bytes_as_the_whole_video(tmp_path):
    """The property the distributed run rests on: each frame's files depend on that frame alone."""
    video = tmp_path / "pan.mp4"
    write_video(video, 30)  # MPEG-4 part 2: P-frames, so a range must seek properly
    model = selfie_model().read_bytes()
    options = {"confidence": True, "overlay": True, "backend": "cpu", "num_threads": 1}
    with FrameSegmenter(model, LocalOutput(tmp_path / "whole"), **options) as engine:
        whole = [r.frame for r in engine.run(WorkItem(str(video), "pan"))]
    assert whole == list(range(30))
    pieces = []
    for start, stop in [(20, None), (0, 7), (7, 20), (30, None)]:  # separate processes in a real run
        with FrameSegmenter(model, LocalOutput(tmp_path / "split"), **options) as engine:
            pieces += [r.frame for r in engine.run(WorkItem(str(video), "pan", start, stop))]
    assert sorted(pieces) == whole  # the range past the end reads nothing and is no error
    expected, got = files_under(tmp_path / "whole"), files_under(tmp_path / "split")
    assert len(expected) == 90 and got.keys() == expected.keys()
    assert [name for name in expected if got[name] != expected[name]] == []
    assert not list((tmp_path / "split").rglob("*.partial"))


def test_a_video_that_cannot_be_read_fails_its_first_range_only(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with FrameSegmenter(selfie_model().read_bytes(), LocalOutput(tmp_path / "out"), backend="cpu") as engine:
        with pytest.raises(OSError, match=r"broken\.mp4"):
            list(engine.run(WorkItem(str(broken), "broken")))


# ------------------------------------------------------------------------------------------ GPUs
def test_egl_device_matched_in_the_machines_cuda_numbering():
    # A driver that reports every GPU under its machine-wide number, in an order of its own.
    reported = {0: 2, 1: 0, 2: 3, 3: 1}
    assert egl_device_for_gpu(3, reported, visible="3") == 2
    assert egl_device_for_gpu("0", reported, visible=None) == 1
    assert egl_device_for_gpu(7, reported, visible="7") is None


def test_egl_device_matched_in_the_visible_devices_numbering():
    # A driver that honours CUDA_VISIBLE_DEVICES: only the worker's GPU reports, as CUDA device 0.
    assert egl_device_for_gpu(3, {1: 0}, visible="3") == 1
    assert egl_device_for_gpu("5", {0: 0, 2: 1}, visible="2,5") == 2
    assert egl_device_for_gpu("GPU-uuid", {0: 0}, visible=None) is None


def test_assign_egl_device_on_this_machine():
    """Without an NVIDIA EGL driver no device reports a CUDA number; the default device is kept."""
    numbers = egl_cuda_devices()
    env: dict[str, str] = {}
    if numbers:
        pytest.skip(f"this machine has NVIDIA EGL devices {numbers}: covered by the GPU check instead")
    choice = assign_egl_device([0], env)
    assert choice is not None and choice.source == "unmatched" and choice.egl_device is None
    assert env == {}
    assert assign_egl_device([], env) is None
    user = {"GPU_SEG_EGL_DEVICE": "1"}
    choice = assign_egl_device(["2"], user)
    assert (choice.source, choice.egl_device, user) == ("env", 1, {"GPU_SEG_EGL_DEVICE": "1"})


# ------------------------------------------------------------------------------------------ outputs
def test_pyarrow_uri_output_and_manifest_append(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    uri = (tmp_path / "bucket" / "masks").as_uri()
    output = open_output(uri)
    output.write("clip/000001.mask.png", b"\x89PNG...")
    assert (tmp_path / "bucket" / "masks" / "clip" / "000001.mask.png").read_bytes() == b"\x89PNG..."
    for line in ("first", "second"):
        with Manifest(uri) as manifest:
            manifest.write(line)
    assert (tmp_path / "bucket" / "masks" / "manifest.jsonl").read_text() == "first\nsecond\n"
    with pytest.raises(InputError) as info:
        open_output("nosuchscheme://bucket/masks")
    assert info.value.argument == "out"


def test_local_output_writes_whole_files(tmp_path):
    output = LocalOutput(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mask.png.partial").write_bytes(b"left by a killed worker")
    output.write("a/x.mask.png", b"complete")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.mask.png"]
    assert (tmp_path / "a" / "x.mask.png").read_bytes() == b"complete"


# ------------------------------------------------------------------------------------------ manifest
def _record(path: str, frame: int | None) -> str:
    return json.dumps(
        {
            "input": path,
            "frame": frame,
            "outputs": [f"{frame}.mask.png"],
            "backend": "cpu",
            "ms": 1.0,
            "context_losses": 1 if frame == 3 else 0,
        }
    )


def _row(task: int, lines: list[tuple[str, str]], worker: str = "w1") -> dict:
    return {"task": task, "worker": worker, "lines": json.dumps(lines), "seconds": 0.5}


def test_results_in_any_order_give_the_manifest_in_plan_order(tmp_path):
    tasks = [
        Task(0, (WorkItem("v.mp4", "v", 0, 2),), 2),
        Task(1, (WorkItem("v.mp4", "v", 2, 4),), 2),
        Task(2, (WorkItem("v.mp4", "v", 4, None),), 2),
        Task(3, (WorkItem("a.png", "a"), WorkItem("b.png", "b")), 2),
        Task(4, (WorkItem("c.png", "c"), WorkItem("d.png", "d")), 2),
        Task(5, (WorkItem("e.png", "e"),), 1),
    ]
    report = RayReport(inputs=6, tasks=len(tasks))
    seen = []
    video = [("v", _record("v.mp4", frame)) for frame in range(5)]
    with Manifest(tmp_path) as manifest:
        collector = ResultCollector(tasks, manifest, report, lambda record: seen.append(record.frame))
        collector.add(_row(2, [video[4], ("v", error_line("v.mp4", "OSError: decoding failed"))], "w2"))
        collector.add(
            _row(3, [("a", _record("a.png", None)), ("b", error_line("b.png", "OSError: unreadable"))])
        )
        assert (tmp_path / "manifest.jsonl").read_text() == ""  # task 0 is not back yet
        collector.add(_row(0, video[:2], worker="w2"))
        collector.add(_row(1, [*video[2:4], ("v", error_line("v.mp4", "OSError: again"))]))
        collector.add(_row(1, video[2:4]))  # a duplicate is ignored
        collector.add(_row(5, [("e", _record("e.png", None))]))
        collector.finish(lambda index: f"NotRun: task {index}")
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [(e["input"], e["frame"], e.get("error")) for e in lines] == [
        ("v.mp4", 0, None),
        ("v.mp4", 1, None),
        ("v.mp4", 2, None),
        ("v.mp4", 3, None),
        ("v.mp4", None, "OSError: again"),  # the input's first failure, and only that one
        ("v.mp4", 4, None),
        ("a.png", None, None),
        ("b.png", None, "OSError: unreadable"),
        ("c.png", None, "NotRun: task 4"),  # never came back: each of its inputs fails
        ("d.png", None, "NotRun: task 4"),
        ("e.png", None, None),
    ]
    assert sorted(f for f in seen if f is not None) == [0, 1, 2, 3, 4] and len(seen) == 7
    assert (report.frames, report.processed, report.context_losses) == (7, 2, 1)
    assert report.failures == [
        ("v.mp4", "OSError: again"),
        ("b.png", "OSError: unreadable"),
        ("c.png", "NotRun: task 4"),
        ("d.png", "NotRun: task 4"),
    ]
    assert {name: (w.frames, w.tasks) for name, w in report.workers.items()} == {"w1": (4, 3), "w2": (3, 2)}


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("workers", 0),
        ("workers", 1.5),
        ("cpus_per_worker", -1),
        ("gpus_per_worker", float("nan")),
        ("max_retries", -1),
        ("frames_per_task", 0),
        ("images_per_task", 0),
        ("lose_context_every", -1),
    ],
)
def test_bad_pool_options_are_input_errors(tmp_path, option, value):
    with environment({"RAY_ADDRESS": "127.0.0.1:9"}), pytest.raises(InputError) as info:
        segment_on_ray([tmp_path], tmp_path / "out", **{option: value})  # raises before Ray starts
    assert info.value.argument == option


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import argparse

    from gpu_seg.cli import segment

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), skdata.astronaut()[..., ::-1])
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray gives: ImportError
    parser = argparse.ArgumentParser()
    segment.add_arguments(parser)
    args = parser.parse_args(
        [str(image), "--out", str(tmp_path / "o"), "--model", str(selfie_model()), "--ray"]
    )
    assert segment.run(args) == 1
    assert 'pip install "gpu_seg[ray]"' in capsys.readouterr().err


def test_output_names_cost_little_per_input_and_never_run_out():
    """Planning 100 000 inputs must not take minutes, and 10 000 files called ``a.jpg`` are no limit."""
    start = time.perf_counter()
    distinct = output_names([f"in/photo_{i}.jpg" for i in range(3000)])
    assert time.perf_counter() - start < 1.0  # was 15 ms per input: a list of 10 000 candidates each
    assert distinct[:2] == ["photo_0", "photo_1"] and len(set(distinct)) == 3000
    same = output_names([f"in/{i}/a.jpg" for i in range(10_050)], taken={"a_3"})
    assert same[:4] == ["a", "a_jpg", "a_2", "a_4"] and same[-1] == "a_10050"
    assert len(set(same)) == len(same)


# ------------------------------------------------------------------------------------------ faults
def test_gpu_seg_errors_cross_process_boundaries_intact():
    """Ray sends a worker's exceptions to the driver pickled: InputError and ShaderBuildError could
    not be unpickled (their constructors take more than the message), so a bad model or backend
    reached the driver as Ray's UnserializableException, once per input."""
    import pickle

    from gpu_seg import errors

    cases = [
        errors.InputError("model", "not a TFLite model"),
        errors.ContextLostError("lost", reason="eglGetError: EGL_CONTEXT_LOST"),
        errors.ShaderBuildError("activate", "0:1: syntax error", "1: void main() {"),
    ]
    from gpu_seg.gl.resident import SourceLostError

    cases.append(SourceLostError("gone", reason="generation 3 ended"))
    for exc in cases:
        exc.add_note("while segmenting a.png")
        exc.extra = 7
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc) and str(copy) == str(exc)
        assert copy.__dict__ == exc.__dict__  # notes and attributes too


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("model", b"not a model"),
        ("backend", "fastest"),
        ("num_threads", 0),
        ("out", "nosuchscheme://b/m"),
        ("gpus_per_worker", 1.5),
    ],
)
def test_segmenter_options_are_checked_before_ray_starts(tmp_path, option, value):
    """A bad model, backend or thread count failed every input in the workers, one by one; a bad
    output URI was found only after Ray had started."""
    options = {"model": selfie_model(), "out": tmp_path / "out", option: value}
    with environment({"RAY_ADDRESS": "127.0.0.1:9"}), pytest.raises(InputError) as info:
        segment_on_ray([tmp_path], **options)  # raises before Ray starts
    assert info.value.argument == option


def test_an_unreachable_cluster_address_fails_fast_from_python(tmp_path):
    """The CLI checked the address; segment_on_ray(address=...) let ray.init retry for good."""
    from gpu_seg.distributed.session import RayClusterError

    started = time.monotonic()
    with pytest.raises(RayClusterError, match="no Ray cluster answers"):
        segment_on_ray([tmp_path], tmp_path / "out", model=selfie_model(), address="127.0.0.1:9")
    assert time.monotonic() - started < 30


@contextlib.contextmanager
def _listener(answer: bytes | None):
    """A TCP port on the loopback interface whose server sends ``answer`` to every connection
    (an HTTP/1 server's reply, say), or, with None, accepts and says nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    done = threading.Event()

    def serve():
        held = []
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)
            if answer is not None:
                with contextlib.suppress(OSError):
                    connection.recv(1024)
                    connection.sendall(answer)
                    connection.close()
        for connection in held:
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(10)
        server.close()


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"", None],
    ids=["an HTTP server (Ray's dashboard port, say)", "a server that hangs up", "a silent server"],
)
def test_an_open_port_that_is_not_a_ray_cluster_fails_fast(answer):
    """ray.init on an open port where no Ray answers (the dashboard's 8265 given for the cluster's
    6379) retried for good: more than 100 s. A port is now asked whether it speaks gRPC, as
    Ray's servers do."""
    from gpu_seg.distributed.session import address_problem

    with _listener(answer) as port:
        started = time.monotonic()
        problem = address_problem(f"127.0.0.1:{port}", timeout=2.0)
        took = time.monotonic() - started
    assert problem is not None and "not a Ray cluster" in problem, problem
    assert took < 10


def test_results_that_arrived_are_written_when_the_run_is_interrupted(tmp_path):
    """Ctrl-C, SIGTERM or a failing on_frame before an earlier task came back: the tasks that did
    come back (their files are on disk) still get their lines, after the ones in order."""
    tasks = [Task(i, (WorkItem(f"{i}.png", str(i)),), 1) for i in range(4)]
    report = RayReport(inputs=4, tasks=4)
    with Manifest(tmp_path) as manifest:
        collector = ResultCollector(tasks, manifest, report)
        collector.add(_row(1, [("1", _record("1.png", None))]))
        collector.add(_row(3, [("3", _record("3.png", None))]))
        collector.add(_row(0, [("0", _record("0.png", None))]))
        collector.interrupted()
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [line["input"] for line in lines] == ["0.png", "1.png", "3.png"]  # 2 never came back


def test_a_failing_on_frame_callback_is_raised_not_taken_for_a_lost_worker(tmp_path):
    tasks = [Task(0, (WorkItem("0.png", "0"),), 1)]
    report = RayReport(inputs=1, tasks=1)

    def callback(record):
        raise ZeroDivisionError("the application's bug")

    with Manifest(tmp_path) as manifest:
        collector = ResultCollector(tasks, manifest, report, callback)
        with pytest.raises(ZeroDivisionError):
            collector.add(_row(0, [("0", _record("0.png", None))]))
        collector.interrupted()
    assert json.loads((tmp_path / "manifest.jsonl").read_text())["input"] == "0.png"


def test_a_given_up_task_does_not_say_its_other_inputs_ran():
    from gpu_seg.distributed.worker import _given_up

    message = _given_up(4, 3)
    assert "times its task ran" in message and "may not have been reached" in message


def test_a_file_uri_output_is_renamed_into_place_never_written_in_place(tmp_path):
    """``file://`` outputs were written straight to their final name: a worker killed midway left a
    truncated ``.confidence.npy`` under its real name. Now a write goes to ``FILE.partial`` and is
    moved over ``FILE``: a file it replaces is replaced whole (here a link, whose target stays
    untouched), and a write that fails (a full disk) leaves nothing behind."""
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    out = tmp_path / "masks"
    out.mkdir()
    (tmp_path / "victim").write_bytes(b"somebody else's file")
    (out / "a.mask.png").symlink_to(tmp_path / "victim")
    output = open_output(out.as_uri())
    output.write("a.mask.png", b"complete")
    assert (tmp_path / "victim").read_bytes() == b"somebody else's file"
    assert not (out / "a.mask.png").is_symlink() and (out / "a.mask.png").read_bytes() == b"complete"
    (out / "b.mask.png.partial").symlink_to("/dev/full")
    with pytest.raises(OSError):
        output.write("b.mask.png", b"x" * (1 << 20))
    assert sorted(p.name for p in out.iterdir()) == ["a.mask.png"]


@pytest.mark.parametrize("address", ["anyscale://my-cluster", "auto", "local"])
def test_addresses_of_other_schemes_are_left_to_ray(address):
    from gpu_seg.distributed.session import address_problem

    assert address_problem(address) is None


def test_ray_session_puts_back_whatever_sigterm_handling_was_there(tmp_path):
    """A default or ignored SIGTERM was left as Ray's exiting handler after the run."""
    from .subprocesses import run_script

    script = """
import json, signal
from gpu_seg.distributed.session import ray_session
before = signal.getsignal(signal.SIGTERM)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with ray_session(None, {"num_cpus": 1}) as ray:
    during = str(signal.getsignal(signal.SIGTERM))
print(json.dumps({"after": str(signal.getsignal(signal.SIGTERM)), "during": during}))
"""
    result = run_script(script, timeout=150)
    assert result["after"] == str(signal.SIG_IGN)
