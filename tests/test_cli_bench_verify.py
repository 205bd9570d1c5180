"""``gpu-seg bench`` and ``gpu-seg verify``: argument handling, JSON and plot output, exit codes.

Timings are never asserted: only that the figures exist, are positive and hang together.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from gpu_seg import oracle
from gpu_seg.cli import bench, build_parser, main
from gpu_seg.tools import verify
from gpu_seg.tools.bench.cases import NOISE_MODES, PRESETS, VARIANT_PRESETS, boundary_fraction
from gpu_seg.tools.bench.goals import evaluate_goals
from gpu_seg.tools.bench.results import BenchRow, finish_rows
from gpu_seg.tools.parity import Parity

needs_mediapipe = pytest.mark.skipif(not oracle.mediapipe_available(), reason="mediapipe is not installed")
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_CV2 = importlib.util.find_spec("cv2") is not None
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


# ----------------------------------------------------------------------------- argument handling
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--tensor", "0x5x3"], "every size must be positive"),
        (["bench", "--tensor", "5x3"], "HxWxC"),
        (["bench", "--tensor", "4x4x2", "--output-size", "32"], "WxH"),
        (["bench", "--tensor", "4x4x2", "--output-size", "32xa"], "integers"),
        (["bench", "--tensor", "4x4x2", "--output-size=-3x4"], "positive"),
        (["bench", "--preset", "faces"], "invalid choice"),
        (["bench", "--tensor", "4x4x2", "--activation", "relu"], "invalid choice"),
        (["bench", "--backends", "cuda"], "invalid choice"),
        (["bench", "--frames", "0"], "not positive"),
        (["bench", "--max-seconds", "nan"], "finite"),
        (["bench", "--output-size", "64x48"], "give --tensor"),
        (["bench", "--activation", "softmax"], "give --tensor"),
        (["verify", "--cases", "0"], "not positive"),
        (["verify", "--seed", "x"], "not an integer"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert run_cli(argv) == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_is_refused_before_running(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "_matplotlib_available", lambda: False)
    argv = ["bench", "--tensor", "4x4x2", "--plot", str(tmp_path / "p.png")]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "gpu_seg[bench]" in err
    assert not (tmp_path / "p.png").exists()


def test_help_describes_both_commands(capsys):
    for command in ("bench", "verify"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert "MediaPipe" in out


def test_default_cases_are_every_preset_model_like_and_noise():
    args = build_parser().parse_args(["bench"])
    cases = bench.cases_from_args(args)
    assert [(c.preset, c.content) for c in cases] == [
        (p, content) for p in PRESETS for content in ("model-like", "iid-noise")
    ]
    for case in cases:
        preset = PRESETS[case.preset]
        assert case.shape == preset.tensor_shape and case.output_size == preset.output_size
        assert case.tensor.dtype == np.float32
        if case.content == "model-like":
            assert case.modes == ("both", "category", "confidence")
            assert 0.005 < case.boundary_fraction < 0.15
            assert case.variants == (case.preset in VARIANT_PRESETS)
        else:
            assert case.modes == NOISE_MODES
            assert case.boundary_fraction > 0.4
    # Seeded: the same seed gives the same tensors, another seed others.
    again = bench.cases_from_args(build_parser().parse_args(["bench", "--preset", "selfie", "--no-noise"]))
    assert len(again) == 1 and np.array_equal(again[0].tensor, cases[0].tensor)
    other = bench.cases_from_args(build_parser().parse_args(["bench", "--preset", "selfie", "--seed", "1"]))
    assert not np.array_equal(other[0].tensor, cases[0].tensor)


def test_custom_tensor_defaults():
    args = build_parser().parse_args(["bench", "--tensor", "8x6x1", "--outputs", "category", "category"])
    (model_like, noise) = bench.cases_from_args(args)
    assert model_like.preset == "custom" and model_like.shape == (8, 6, 1)
    assert model_like.output_size == (6, 8) and model_like.activation == "sigmoid"
    assert model_like.modes == ("category",) and noise.modes == ("category",)
    args = build_parser().parse_args(["bench", "--tensor", "8x6x3", "--preset", "selfie", "--no-noise"])
    cases = bench.cases_from_args(args)
    assert [c.preset for c in cases] == ["selfie", "custom"] and cases[1].activation == "softmax"


def test_boundary_fraction_counts_texels_next_to_another_class():
    labels = np.zeros((4, 4, 2), np.float32)
    labels[:, 2:, 1] = 1.0  # columns 2-3 are class 1: columns 1 and 2 are boundary texels
    assert boundary_fraction(labels, "softmax") == pytest.approx(0.5)
    assert boundary_fraction(np.zeros((4, 4, 2), np.float32), "softmax") == 0.0


def test_goals_pass_and_miss():
    def row(preset, outputs, backend, median, floor=None):
        r = BenchRow(preset, (1, 1, 1), (1, 1), "softmax", "model-like", 0.0, outputs, backend, backend)
        r.median_ms, r.bytes_moved = median, 1
        r.floor_ms = floor
        return r

    rows = [
        row("multiclass", "both", "gl", 1.0),
        row("multiclass", "both", "mediapipe", 10.0),
        row("selfie", "both", "gl", 5.0),
        row("selfie", "both", "mediapipe", 10.0),
        row("multiclass", "category", "gl", 2.0),
        row("multiclass", "category", "opencv", 3.0),
        row("multiclass", "confidence", "gl", 3.0, floor=1.0),
    ]
    finish_rows(rows, 0.0)
    goals = {g["name"]: g for g in evaluate_goals(rows)}
    assert goals["multiclass both: GL / MediaPipe CPU <= 0.20"]["passed"] is True
    assert goals["selfie both: GL / MediaPipe CPU <= 0.20"]["passed"] is False
    assert goals["selfie both: GL / MediaPipe CPU <= 0.20"]["measured"] == pytest.approx(0.5)
    assert goals["deeplab category: GL / MediaPipe CPU <= 0.33"]["passed"] is None
    assert goals["multiclass category: GL faster than OpenCV"]["passed"] is True
    assert goals["multiclass confidence: GL within 2.5x of the copy-bandwidth floor"]["passed"] is False


# ----------------------------------------------------------------------------- a tiny real run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    path, plot = folder / "bench.json", folder / "bench.png"
    argv = ["bench", "--tensor", "16x16x3", "--output-size", "32x24", "--frames", "2", "--warmup", "1"]
    argv += ["--bandwidth-mib", "8", "--json", str(path), "--quiet"]
    if HAS_MPL:
        argv += ["--plot", str(plot)]
    code = main(argv)
    return code, json.loads(path.read_text()), plot


def test_bench_json_structure(tiny_run, capsys):
    code, report, _ = tiny_run
    assert code == 0
    assert set(report) >= {"metadata", "copy_bandwidth_gbps", "cases", "goals", "settings", "tensors"}
    meta = report["metadata"]
    assert set(meta) >= {"cpu", "gl", "versions", "git", "python", "platform"}
    assert set(meta["versions"]) >= {"numpy", "opencv", "mediapipe", "moderngl", "gpu_seg"}
    assert "renderer" in meta["gl"] and "version" in meta["gl"]
    assert report["copy_bandwidth_gbps"] > 0
    assert report["settings"]["frames"] == 2 and report["settings"]["warmup"] == 1
    keys = {
        "preset", "tensor_shape", "output_size", "activation", "content", "boundary_fraction", "outputs",
        "backend", "median_ms", "iqr_ms", "samples", "bytes_moved", "ratio_to_mediapipe",
        "fraction_of_copy_bandwidth",
    }  # fmt: skip
    expected_backends = {"gl", "gl_alloc", "gl_view", "gl_async", "cpu"}
    expected_backends |= {"opencv"} if HAS_CV2 else set()
    expected_backends |= {"torch"} if HAS_TORCH else set()
    expected_backends |= {"mediapipe"} if oracle.mediapipe_available() else set()
    for content, modes in (
        ("model-like", {"both", "category", "confidence"}),
        ("iid-noise", {"both", "category"}),
    ):
        rows = [r for r in report["cases"] if r["content"] == content]
        assert {r["outputs"] for r in rows} == modes
        for mode in modes:
            timed = {r["backend"] for r in rows if r["outputs"] == mode and r["median_ms"] is not None}
            model_like_only = {"gl_alloc", "gl_view", "gl_async"}
            assert timed >= expected_backends - (model_like_only if content == "iid-noise" else set())
    for row in report["cases"]:
        assert set(row) >= keys
        assert row["tensor_shape"] == [16, 16, 3] and row["output_size"] == [32, 24]
        assert 0.0 <= row["boundary_fraction"] <= 1.0
        if row["median_ms"] is None:
            assert row["unavailable"]
            continue
        assert row["median_ms"] > 0 and row["iqr_ms"] >= 0 and row["samples"] == 2
        assert row["bytes_moved"] > 16 * 16 * 3 * 4
        assert row["fraction_of_copy_bandwidth"] > 0
        if oracle.mediapipe_available():
            assert row["ratio_to_mediapipe"] > 0
        if row["backend"] in ("gl", "gl_view", "gl_async"):
            assert row["vs_reference"]["parity_ok"] is True
    assert {g["name"] for g in report["goals"]} >= {
        "custom category: GL faster than OpenCV",
        "custom confidence: GL within 2.5x of the copy-bandwidth floor",
    }
    for goal in report["goals"]:
        assert goal["passed"] in (True, False, None) and goal["detail"]


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_bench_plot_is_a_png(tiny_run):
    _, _, plot = tiny_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_mediapipe_runs_the_others(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(oracle, "mediapipe_available", lambda: False)
    path = tmp_path / "b.json"
    argv = ["bench", "--tensor", "8x8x2", "--output-size", "12x10", "--backends", "cpu", "mediapipe"]
    argv += [
        "--outputs",
        "category",
        "--no-noise",
        "--quick",
        "--bandwidth-mib",
        "4",
        "--json",
        str(path),
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MediaPipe is not installed" in out and "gpu_seg[mediapipe]" in out
    rows = {r["backend"]: r for r in json.loads(path.read_text())["cases"]}
    assert rows["mediapipe"]["median_ms"] is None and "not installed" in rows["mediapipe"]["unavailable"]
    assert rows["cpu"]["median_ms"] > 0 and rows["cpu"]["ratio_to_mediapipe"] is None


# ----------------------------------------------------------------------------- verify
@needs_mediapipe
def test_verify_small_battery_passes(capsys, tmp_path):
    path = tmp_path / "v.json"
    assert main(["verify", "--cases", "3", "--seed", "1", "--quiet", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    for column in ("activation", "gl conf err", "ref conf err", "gl cat mism", "ref cat mism", "status"):
        assert column in out
    assert "3/3 cases within tolerance" in out
    report = json.loads(path.read_text())
    assert report["summary"]["cases"] == 3 and report["summary"]["failed"] == 0
    assert all(case["ok"] for case in report["cases"])


def test_verify_battery_is_seeded_and_varied():
    first, again = verify.make_battery(40, 7), verify.make_battery(40, 7)
    assert all(np.array_equal(a.tensor, b.tensor) for a, b in zip(first, again, strict=True))
    assert {c.activation for c in first} == {"none", "sigmoid", "softmax"}
    assert {c.size_kind for c in first} == set(verify.SIZE_KINDS)
    assert {c.tensor_shape[2] for c in first} <= set(verify.CHANNELS)
    assert all(min(c.output_size) >= 2 and 1.0 <= c.scale <= 50.0 for c in first)


def test_verify_without_mediapipe_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(oracle, "mediapipe_available", lambda: False)
    assert main(["verify", "--cases", "2"]) == 2
    assert 'pip install "gpu_seg[mediapipe]"' in capsys.readouterr().err


def test_verify_reports_a_failure(monkeypatch, capsys):
    """A GL path that returns wrong masks makes verify fail with status 1."""

    def broken(case, processors, gl_error, cpu_processors=None):
        outcome = verify.CaseOutcome(case)
        outcome.gl = Parity(confidence_error=0.5, confidence_bad=3, problem="3 confidence values off")
        outcome.problems.append("GL: 3 confidence values off")
        return outcome

    monkeypatch.setattr(oracle, "mediapipe_available", lambda: True)
    monkeypatch.setattr(verify, "check_case", broken)
    assert main(["verify", "--cases", "2", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "0/2 cases within tolerance" in captured.out
    assert "outside tolerance" in captured.err


def test_a_verify_battery_is_drawn_case_by_case_and_keeps_no_tensor_once_checked():
    """The battery was drawn whole before the first case (23 KiB a case: 2.3 GB for 100,000 cases)
    and every outcome kept its tensor to the end."""
    drawn = list(verify.iter_battery(6, 3))
    assert all(
        np.array_equal(a.tensor, b.tensor) for a, b in zip(drawn, verify.make_battery(6, 3), strict=True)
    )
    report = verify.run_verify(3, 3)
    assert [o.case.index for o in report.outcomes] == [0, 1, 2]
    assert [o.case.tensor_shape for o in report.outcomes] == [c.tensor_shape for c in drawn[:3]]
    assert all(o.case.tensor.size == 0 for o in report.outcomes)


def test_bench_that_could_time_nothing_fails_and_says_why(monkeypatch, tmp_path, capsys):
    """``--backends mediapipe`` without MediaPipe (or the end-to-end preset without its parts)
    printed a table of unavailable rows and exited 0."""
    monkeypatch.setattr(oracle, "mediapipe_available", lambda: False)
    path = tmp_path / "b.json"
    argv = ["bench", "--tensor", "8x8x2", "--output-size", "12x10", "--backends", "mediapipe"]
    argv += ["--outputs", "category", "--no-noise", "--quick", "--bandwidth-mib", "4", "--json", str(path)]
    assert main([*argv, "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "nothing was timed" in captured.err and "not installed" in captured.err
    assert json.loads(path.read_text())["cases"], "the report is still written"
