"""Bad arguments to every ``gpu-seg`` command: a clear message and exit status 2, never a traceback,
and found before the run starts (nothing written, no figures lost).

Most tests start the real console script in a subprocess (as a shell does), so that a traceback
or a crash shows as such; the rest call :func:`gpu_seg.cli.main` in-process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from gpu_seg.cli import bench, main
from gpu_seg.errors import InputError

from .test_cli import CONSOLE_SCRIPT, _env
from .test_cli_bench_verify import needs_mediapipe

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_CV2 = importlib.util.find_spec("cv2") is not None
#: A folder that exists but in which nothing can be created, even by root.
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self").exists(), reason="no /proc here")


def gpu_seg(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert CONSOLE_SCRIPT.exists(), f"no console script at {CONSOLE_SCRIPT}: pip install -e ."
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=300,
        check=False,
    )


def assert_refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Status 2, every fragment in the message, no traceback, and no report on stdout (not run)."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    assert done.stdout == "", done.stdout


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """``in/ok.png`` (bytes that are never read when the arguments are refused), an empty folder
    ``emptydir`` and a plain file ``afile``."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ok.png").write_bytes(b"not read")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "afile").write_text("x")
    return tmp_path


# ----------------------------------------------------------------------------- output paths
def test_segment_out_that_is_a_file(workdir):
    done = gpu_seg(["segment", "in/ok.png", "--out", "in/ok.png", "--quiet"], workdir)
    assert_refused(done, "--out", "in/ok.png")
    assert (workdir / "in" / "ok.png").read_bytes() == b"not read"


@needs_proc
def test_segment_out_that_cannot_be_created(workdir):
    assert_refused(gpu_seg(["segment", "in/ok.png", "--out", "/proc/nope", "--quiet"], workdir), "--out")
    done = gpu_seg(["segment", "in/ok.png", "--out", "afile/sub", "--quiet"], workdir)
    assert_refused(done, "--out", "afile/sub")


SOAK = ["soak", "--frames", "4", "--warmup", "1", "--quiet"]
VERIFY = ["verify", "--cases", "1", "--quiet"]
BENCH = ["bench", "--quick", "--tensor", "4x4x2", "--quiet"]


@pytest.mark.parametrize(
    "argv",
    [
        [*SOAK, "--json", "emptydir"],
        [*SOAK, "--json", "missing/x.json"],
        [*SOAK, "--json", "afile/x.json"],
        [*VERIFY, "--json", "emptydir"],
        [*VERIFY, "--json", "missing/x.json"],
        [*BENCH, "--json", "emptydir"],
        [*BENCH, "--json", "missing/x.json"],
        pytest.param([*BENCH, "--plot", "emptydir"], marks=pytest.mark.skipif(not HAS_MPL, reason="no mpl")),
        pytest.param(
            [*BENCH, "--plot", "missing/x.png"], marks=pytest.mark.skipif(not HAS_MPL, reason="no mpl")
        ),
        ["view", "in/ok.png", "--frames", "1", "--hidden", "--screenshot", "emptydir"],
        ["view", "in/ok.png", "--frames", "1", "--hidden", "--screenshot", "missing/x.png"],
    ],
    ids=lambda argv: "-".join(argv[:1] + argv[-2:]),
)
def test_output_files_that_cannot_be_written_are_refused_before_the_run(argv, workdir):
    done = gpu_seg(argv, workdir)
    assert_refused(done, argv[-2], argv[-1])
    assert list((workdir / "emptydir").iterdir()) == []
    assert not (workdir / "missing").exists()


@needs_proc
@pytest.mark.parametrize(
    "argv",
    [
        [*SOAK, "--json", "/proc/nope"],
        [*VERIFY, "--json", "/proc/nope/x"],
        [*BENCH, "--json", "/proc/nope/x"],
        pytest.param(
            [*BENCH, "--plot", "/proc/nope/x.png"], marks=pytest.mark.skipif(not HAS_MPL, reason="no mpl")
        ),
    ],
    ids=lambda argv: "-".join(argv[:1] + argv[-2:]),
)
def test_output_files_under_proc_are_refused(argv, workdir):
    assert_refused(gpu_seg(argv, workdir), argv[-2])


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_bench_plot_in_a_format_matplotlib_cannot_write(workdir):
    assert_refused(gpu_seg([*BENCH, "--plot", "chart.nope"], workdir), "--plot", "nope")
    assert not (workdir / "chart.nope").exists()


@pytest.mark.skipif(not HAS_CV2, reason="OpenCV is not installed")
def test_view_screenshot_in_a_format_opencv_cannot_write(workdir):
    argv = ["view", "in/ok.png", "--frames", "1", "--hidden", "--screenshot", "shot.nope"]
    assert_refused(gpu_seg(argv, workdir), "--screenshot", "shot.nope")


def test_a_refused_run_leaves_no_trial_file(workdir):
    """The --json check creates and removes the file; a later bad argument leaves nothing behind."""
    done = gpu_seg([*SOAK, "--json", "ok.json", "--seed", "-1"], workdir)
    assert_refused(done, "--seed")
    assert not (workdir / "ok.json").exists()


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        ([*SOAK, "--seed", "-1"], "--seed"),
        ([*VERIFY, "--seed", "-1"], "--seed"),
        ([*BENCH, "--seed", "-1"], "--seed"),
        # sizes that no machine's memory holds
        (["soak", "--tensor", "100000x100000x100", "--frames", "2", "--quiet"], "--tensor"),
        (["bench", "--quick", "--tensor", "100000x100000x100", "--quiet"], "--tensor"),
        ([*BENCH[:2], "--tensor", "1x1x1000000", "--output-size", "65536x65536", "--quiet"], "--tensor"),
        ([*SOAK, "--tensor", "4x4x1000000", "--output-size", "65536x65536"], "--tensor"),
        ([*BENCH, "--bandwidth-mib", "1000000000000"], "--bandwidth-mib"),
        # output sizes beyond every backend's limit
        ([*BENCH, "--output-size", "100000x100000"], "--output-size"),
        ([*SOAK, "--output-size", "70000x2"], "--output-size"),
        # waits longer than Python can sleep
        ([*SOAK, "--idle", "1e300"], "--idle"),
        (["view", "in/ok.png", "--frames", "1", "--hidden", "--max-fps", "1e-300"], "--max-fps"),
        # more than LiteRT can start (100000 threads crash it), past the compositor's blur limit
        (["segment", "in/ok.png", "--out", "out", "--quiet", "--threads", "100000"], "--threads"),
        (["view", "in/ok.png", "--frames", "1", "--hidden", "--threads", "100000"], "--threads"),
        (["view", "in/ok.png", "--frames", "1", "--hidden", "--blur-radius", "65"], "--blur-radius"),
    ],
    ids=[
        "soak-seed",
        "verify-seed",
        "bench-seed",
        "soak-tensor",
        "bench-tensor",
        "bench-output-size-memory",
        "soak-output-size-memory",
        "bench-bandwidth",
        "bench-output-size",
        "soak-output-size",
        "soak-idle",
        "view-max-fps",
        "segment-threads",
        "view-threads",
        "view-blur-radius",
    ],
)
def test_numbers_out_of_range_are_argument_errors(argv, option, workdir):
    assert_refused(gpu_seg(argv, workdir), option)


# ----------------------------------------------------------------------------- InputError
def _raise(exc: BaseException):
    def run(*args, **kwargs):
        raise exc

    return run


def test_an_input_error_from_the_library_is_an_argument_error(monkeypatch, capsys):
    """An InputError that escapes a command names the CLI option it comes from, with status 2."""
    monkeypatch.setattr(bench, "BenchRun", _raise(InputError("output_size", "width 9 is too wide")))
    assert main(["bench", "--tensor", "4x4x2", "--output-size", "9x4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "gpu-seg bench: error: argument --output-size: width 9 is too wide" in err
    assert "Traceback" not in err


def test_an_input_error_without_an_option_keeps_its_own_name(monkeypatch, capsys):
    monkeypatch.setattr(bench, "BenchRun", _raise(InputError("confidence_channels", "no such channel")))
    assert main(["bench", "--tensor", "4x4x2", "--quiet"]) == 2
    assert "gpu-seg bench: error: confidence_channels: no such channel" in capsys.readouterr().err


def test_other_exceptions_stay_visible(monkeypatch):
    monkeypatch.setattr(bench, "BenchRun", _raise(RuntimeError("a real bug")))
    with pytest.raises(RuntimeError, match="a real bug"):
        main(["bench", "--tensor", "4x4x2", "--quiet"])


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("bogus", "not a Ray address"),
        ("127.0.0.1:1", "no Ray cluster answers"),  # nothing listens: it used to retry for ever
        ("ray://127.0.0.1:1", "no Ray cluster answers"),
        ("host:99999", "not a Ray address"),
    ],
)
def test_segment_ray_addresses_are_checked_before_the_run(workdir, address, words):
    started = time.monotonic()
    done = gpu_seg(["segment", "in/ok.png", "--out", "out", "--quiet", "--ray", address], workdir)
    assert_refused(done, "--ray", words)
    assert time.monotonic() - started < 60


def test_segment_out_with_an_unwritable_manifest(workdir):
    (workdir / "out" / "manifest.jsonl").mkdir(parents=True)
    assert_refused(gpu_seg(["segment", "in/ok.png", "--out", "out", "--quiet"], workdir), "manifest.jsonl")


def test_a_ray_cluster_that_cannot_be_joined_is_a_gpu_seg_error():
    pytest.importorskip("ray", reason="Ray is not installed")
    from gpu_seg.distributed.session import RayClusterError, ray_session

    with pytest.raises(RayClusterError, match="bogus"):
        with ray_session("bogus"):
            pass


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_an_interrupt_python_drops_in_a_weakref_callback_still_stops_the_command(signum, monkeypatch):
    """Python drops an exception raised in a weakref callback ("Exception ignored in ..."): a Ctrl-C
    that landed while a context generation was freed (``Supervisor.contexts`` is a
    WeakKeyDictionary) was lost, and ``gpu-seg soak`` ran to its end and exited 0. The interrupt is
    now raised again at the command's next step (its progress callback, drawn or not)."""
    import os
    import signal
    import sys
    import types
    import weakref

    from gpu_seg import cli
    from gpu_seg.cli.console import progress_bar

    class Thing:
        pass

    def interrupt_inside(ref):
        os.kill(os.getpid(), getattr(signal, signum))
        time.sleep(0.5)  # the handler runs here, in the callback

    expected = cli.Terminated if signum == "SIGTERM" else KeyboardInterrupt
    dropped = []  # what Python dropped and reported: nothing (the command raises it again)
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    steps = []
    with cli._interrupts(), pytest.raises(expected):
        with progress_bar(3, "steps", enabled=False) as progress:
            thing = Thing()
            ref = weakref.ref(thing, interrupt_inside)
            del thing  # the callback runs, and the interrupt raised in it is dropped
            sys.unraisablehook(types.SimpleNamespace(exc_type=ValueError))  # others still reported
            steps.append("went on")
            progress(1, "")
            steps.append("next step")
    assert ref() is None and steps == ["went on"]
    assert dropped == [ValueError]  # the interrupt not printed as "Exception ignored in ..."


@pytest.mark.parametrize(
    "argv",
    [
        ["soak", "--frames", "3"],
        ["verify", "--cases", "1"],
        ["bench", "--quick", "--preset", "selfie", "--outputs", "category", "--backends", "cpu"],
    ],
    ids=["soak", "verify", "bench"],
)
def test_a_json_file_that_cannot_be_written_at_the_end_keeps_the_report(argv, capsys):
    """The ``--json`` file is checked before the run, but it is written after it: a full disk (or
    its folder removed meanwhile) gave a traceback, and the report was never printed."""
    extra = ["--no-noise"] if argv[0] == "bench" else []
    status = main([*argv, *extra, "--quiet", "--json", "/dev/full"])
    printed = capsys.readouterr()
    assert status == 1
    assert "cannot write /dev/full" in printed.err and "Traceback" not in printed.err
    assert printed.out.strip(), "the report is still printed"


def test_a_soak_without_gl_fails_instead_of_passing_on_the_cpu():
    """With no EGL (here: no vendor library), every frame ran on the CPU, no loss was injected, and
    the soak said OK with exit 0: a CI gate on it passed without testing any recovery."""
    import os

    env = {**_env(), "__EGL_VENDOR_LIBRARY_FILENAMES": os.devnull}
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "soak", "--frames", "5", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "no frame ran on GL" in done.stderr and "Traceback" not in done.stderr


@needs_mediapipe
def test_verify_without_gl_says_why_it_fails_and_reports_no_gl_figures(tmp_path):
    """Without EGL, verify said "only the reference is checked", then failed every case as "outside
    tolerance", and its summary and JSON gave the GL path that never ran an error of 0."""
    import os

    path = tmp_path / "v.json"
    env = {**_env(), "__EGL_VENDOR_LIBRARY_FILENAMES": os.devnull}
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "verify", "--cases", "2", "--quiet", "--json", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "outside tolerance" not in done.stderr and "Traceback" not in done.stderr
    assert "not checked on GL" in done.stderr and "GL unavailable" in done.stderr
    assert "GL conf |diff| n/a" in done.stdout
    summary = json.loads(path.read_text())["summary"]
    assert summary["worst_gl_confidence_error"] is None and summary["gl_category_mismatches"] is None
    assert summary["worst_reference_confidence_error"] is not None


def test_bench_json_and_plot_to_the_same_file_is_refused(workdir, capsys):
    """The plot silently overwrote the JSON."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    with pytest.raises(SystemExit) as info:
        main(["bench", "--quick", "--json", str(workdir / "out.png"), "--plot", f"{workdir}/./out.png"])
    assert info.value.code == 2 and "same file" in capsys.readouterr().err


def test_bench_seeds_beyond_32_bits_give_other_tensors():
    """``--seed 4294967296`` timed the tensors of ``--seed 0`` while reporting 4294967296."""
    from gpu_seg.tools.bench.cases import PRESETS, build_cases

    def tensor(seed):
        return build_cases([PRESETS["selfie"]], ("category",), seed, False)[0].tensor

    assert not np.array_equal(tensor(0), tensor(2**32))
    assert np.array_equal(tensor(5), tensor(5))


def test_bench_agreement_table_lists_the_fast_cpu_path(capsys):
    """The fast CPU path (what backend='auto' picks on CPU machines) was left out of the table."""
    argv = ["bench", "--quick", "--quiet", "--preset", "selfie", "--outputs", "category", "--no-noise"]
    status = main([*argv, "--backends", "cpu"])
    assert status == 0
    out = capsys.readouterr().out
    table = out[out.index("Agreement with MediaPipe semantics") : out.index("Goals")]
    assert "gpu_seg CPU" in table.splitlines()[3], table


def test_info_errors_go_to_stderr_and_a_negative_device_is_an_argument_error(capsys):
    import os

    with pytest.raises(SystemExit) as info:
        main(["info", "--device", "-1"])
    assert info.value.code == 2
    capsys.readouterr()
    env = {**_env(), "__EGL_VENDOR_LIBRARY_FILENAMES": os.devnull}
    done = subprocess.run([str(CONSOLE_SCRIPT), "info"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == "" and "no usable GL context" in done.stderr


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"], ids=["closed stdout", "full disk"])
def test_a_stdout_that_cannot_be_written_is_a_one_line_error_not_a_traceback(redirect):
    """A closed stdout (``>&-``: Python's sys.stdout is None) gave an AttributeError traceback, a
    stdout on a full disk an OSError traceback (only a closed pipe was handled)."""
    command = f"{CONSOLE_SCRIPT} info {redirect}"
    done = subprocess.run(["sh", "-c", command], env=_env(), capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    if redirect == ">&-":
        assert done.returncode == 0  # nobody reads it: the command ran, its output went nowhere
    else:
        assert done.returncode == 1 and "cannot write to stdout" in done.stderr


def test_an_interrupted_soak_reports_what_it_ran_and_writes_its_json(tmp_path):
    """Ctrl-C or SIGTERM (``timeout``, Slurm) on a long soak printed "interrupted" and nothing else:
    the frames it had checked, its losses and rebuilds were lost, and no JSON was written."""
    import json
    import signal
    import time

    path = tmp_path / "soak.json"
    argv = [str(CONSOLE_SCRIPT), "soak", "--frames", "100000", "--lose-every", "20", "--json", str(path)]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "terminated" in err
    data = json.loads(path.read_text())
    assert data["interrupted_after"] > 0 and data["ok"] is False
    assert data["frames_returned"] > 0 and data["mismatched_frames"] == 0
    assert "INTERRUPTED" in out and f"after {data['interrupted_after']} of 100000 frames" in out
    assert data["rss_growth_kib"] is not None and "no baseline" not in out  # measured up to the interrupt


def test_a_soak_interrupted_while_it_sets_up_still_reports_and_writes_its_json(tmp_path, monkeypatch, capsys):
    """A signal that landed while the soak built its processor (its GL context) ended it with
    "interrupted" alone: no report, no JSON. A real SIGINT, sent when the processor is made."""
    import json
    import os
    import signal

    from gpu_seg.tools.soak import run as soak_run

    made = soak_run.SegmentationPostprocessor

    def interrupted_when_made(*args, **kwargs):
        processor = made(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here
        return processor

    monkeypatch.setattr(soak_run, "SegmentationPostprocessor", interrupted_when_made)
    path = tmp_path / "soak.json"
    assert main(["soak", "--frames", "50", "--quiet", "--json", str(path)]) == 130
    data = json.loads(path.read_text())
    assert data["interrupted_after"] == 0 and data["ok"] is False and data["rss_growth_kib"] is None
    assert "INTERRUPTED after 0 of 50 frames" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "--cases", "3000"],
        [
            "bench",
            "--preset",
            "selfie",
            "--no-noise",
            "--backends",
            "cpu",
            "reference",
            "--frames",
            "9000",
            "--max-seconds",
            "0",
        ],
    ],
    ids=["verify", "bench"],
)
def test_interrupted_verify_and_bench_report_what_they_measured(argv, tmp_path):
    """As for soak: Ctrl-C kept nothing of a long verify or bench."""
    import json
    import signal
    import time

    path = tmp_path / "run.json"
    extra = ["--no-noise"] if argv[0] == "bench" else []
    command = [str(CONSOLE_SCRIPT), *argv, *extra, "--quiet", "--json", str(path)]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.rstrip().endswith("interrupted")
    data = json.loads(path.read_text())
    assert data["interrupted"] is True
    assert "INTERRUPTED" in out


def test_json_written_through_a_symlink_keeps_the_link_the_mode_and_hard_links(tmp_path):
    """``--json`` was written as PATH.partial and renamed over PATH: a symlink became a regular file
    (its target left stale), a mode 600 file became 644, a second hard link kept the old bytes."""
    import os
    import stat

    from gpu_seg.cli.args import write_json

    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert write_json(str(link), {"a": 1}) is None
    assert link.is_symlink() and json_of(real) == {"a": 1}
    private = tmp_path / "private.json"
    private.write_text("{}")
    private.chmod(0o600)
    os.link(private, tmp_path / "other-name.json")
    assert write_json(str(private), {"b": 2}) is None
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert json_of(tmp_path / "other-name.json") == {"b": 2}
    fresh = tmp_path / "fresh.json"
    assert write_json(str(fresh), {"c": 3}) is None and json_of(fresh) == {"c": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["real.json", "link.json", "private.json", "other-name.json", "fresh.json"]
    )


def json_of(path):
    import json

    return json.loads(Path(path).read_text())


def test_an_inherited_ignored_sigint_stays_ignored():
    """A background job of a shell script (or ``trap '' INT``) starts with SIGINT ignored, so that a
    Ctrl-C for the foreground job does not stop it: the commands took SIGINT over and stopped."""
    import signal
    import time

    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "soak", "--frames", "1000000", "--lose-every", "0", "--quiet"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(5)
    proc.send_signal(signal.SIGINT)
    time.sleep(2)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)  # which it does answer
    _, err = proc.communicate(timeout=300)
    assert still_running, err[-2000:]
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted" not in err
