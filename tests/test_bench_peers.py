"""``gpu-seg bench``: the PyTorch CUDA peer and the end-to-end preset.

The CUDA rows run only where ``torch.cuda.is_available()``; elsewhere the tests check that they
are absent and that the metadata says why. The end-to-end preset runs the real selfie model on a
real photo with gpu_seg's ImageSegmenter and MediaPipe's.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from gpu_seg import oracle, reference_postprocess
from gpu_seg.cli import main
from gpu_seg.tools.bench.backends import backends_for
from gpu_seg.tools.bench.cases import PRESETS, build_cases
from gpu_seg.tools.bench.end_to_end import E2E_PRESET
from gpu_seg.tools.bench.torch_peers import CUDA_BACKENDS, cuda_status

HAS_TORCH = importlib.util.find_spec("torch") is not None
CUDA = cuda_status()["available"]


def _bench(tmp_path, *argv: str, status: int = 0) -> dict:
    path = tmp_path / "b.json"
    code = main(["bench", *argv, "--quick", "--bandwidth-mib", "4", "--json", str(path), "--quiet"])
    assert code == status
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- PyTorch CUDA
def test_cuda_rows_are_planned_only_where_cuda_is_available():
    case = build_cases([PRESETS["selfie"]], ("both",), noise=False)[0]
    keys = backends_for(case, "both", ("gl", "torch", "torch_cuda", "mediapipe"), alloc=False)
    expected = list(CUDA_BACKENDS) if CUDA else []
    assert keys == ["gl", "torch", *expected, "mediapipe"]


@pytest.mark.skipif(CUDA, reason="checks the report of a machine without CUDA")
def test_without_cuda_the_rows_are_absent_and_the_metadata_says_why(tmp_path):
    report = _bench(
        tmp_path, "--tensor", "8x8x2", "--output-size", "12x10", "--backends", "cpu", "torch_cuda"
    )
    assert {r["backend"] for r in report["cases"]} == {"cpu"}
    cuda = report["metadata"]["cuda"]
    assert cuda["available"] is False
    assert (
        ("not installed" in cuda["reason"])
        if not HAS_TORCH
        else ("is_available() is False" in cuda["reason"])
    )


@pytest.mark.skipif(not CUDA, reason="needs PyTorch with a CUDA device (torch.cuda.is_available())")
def test_cuda_rows_time_host_to_host_and_resident_with_the_cpu_peers_maths(tmp_path):
    report = _bench(
        tmp_path,
        "--tensor",
        "40x40x3",
        "--output-size",
        "96x72",
        "--backends",
        "torch",
        "torch_cuda",
        "--no-noise",
    )
    assert report["metadata"]["cuda"]["available"] is True and report["metadata"]["cuda"]["device"]
    rows = {(r["backend"], r["outputs"]): r for r in report["cases"]}
    for mode in ("both", "category", "confidence"):
        cpu = rows[("torch", mode)]
        for key in CUDA_BACKENDS:
            row = rows[(key, mode)]
            assert row["unavailable"] is None and row["median_ms"] > 0 and row["samples"] == 3
            check, cpu_check = row["vs_reference"], cpu["vs_reference"]
            if "confidence_max_abs_error" in check:  # the same maths as the CPU peer: same closeness
                assert check["confidence_max_abs_error"] < 1e-5
            if "category_mismatch_fraction" in check:  # half-pixel category, as the CPU peer
                assert check["category_mismatch_fraction"] == pytest.approx(
                    cpu_check["category_mismatch_fraction"], abs=0.01
                )


@pytest.mark.skipif(not CUDA, reason="needs PyTorch with a CUDA device (torch.cuda.is_available())")
def test_torch_masks_on_cuda_equal_the_cpu_peers_masks():
    import torch
    import torch.nn.functional as functional

    from gpu_seg.tools.bench.torch_peers import torch_masks
    from gpu_seg.types import Activation

    tensor = (np.random.default_rng(4).standard_normal((33, 47, 5)) * 4).astype(np.float32)
    cpu = torch_masks(torch, functional, torch.from_numpy(tensor), Activation.SOFTMAX, (80, 61), "both")
    gpu = torch_masks(
        torch, functional, torch.from_numpy(tensor).cuda(), Activation.SOFTMAX, (80, 61), "both"
    )
    np.testing.assert_allclose(gpu[0].cpu().numpy(), cpu[0].numpy(), atol=2e-6)
    assert np.mean(gpu[1].cpu().numpy() == cpu[1].numpy()) > 0.999
    reference = reference_postprocess(tensor, "softmax", (80, 61))
    np.testing.assert_allclose(gpu[0].cpu().numpy(), reference.confidence_masks, atol=2e-5)


# ----------------------------------------------------------------------------- end to end
def test_end_to_end_is_opt_in():
    from gpu_seg.cli import build_parser
    from gpu_seg.cli.bench import cases_from_args

    args = build_parser().parse_args(["bench"])
    assert all(case.preset != E2E_PRESET for case in cases_from_args(args))


def test_end_to_end_without_its_parts_reports_why(monkeypatch, tmp_path):
    from gpu_seg import models

    def unreachable(landscape: bool = False):
        raise models.ModelFetchError("the package registry cannot be reached")

    monkeypatch.setattr(models, "selfie_segmenter", unreachable)
    report = _bench(tmp_path, "--preset", E2E_PRESET, "--backends", "gl", "cpu", status=1)  # nothing timed
    rows = report["cases"]
    assert {r["backend"] for r in rows} == {"e2e_auto", "e2e_video", "e2e_cpu"}
    assert all(r["median_ms"] is None and "registry cannot be reached" in r["unavailable"] for r in rows)


@pytest.fixture(scope="module")
def selfie_cache():
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    pytest.importorskip("skimage", reason="scikit-image (the photo) is not installed")
    from .segmenter_support import selfie_model, session_cache

    selfie_model()  # fetched once into the test session's cache
    return session_cache()


def test_end_to_end_preset_times_gpu_seg_and_mediapipe_on_a_photo(
    selfie_cache, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("GPU_SEG_CACHE_DIR", str(selfie_cache))
    report = _bench(tmp_path, "--preset", E2E_PRESET)
    rows = {r["backend"]: r for r in report["cases"]}
    mediapipe = oracle.mediapipe_available()
    expected = {"e2e_auto", "e2e_video", "e2e_cpu"} | (
        {"e2e_mediapipe", "e2e_mediapipe_video"} if mediapipe else set()
    )
    assert {k for k, r in rows.items() if r["median_ms"]} == expected
    for key in expected:
        row = rows[key]
        assert row["preset"] == E2E_PRESET and row["content"] == "photo" and row["outputs"] == "both"
        assert row["output_size"] == [640, 480] and row["tensor_shape"] == [256, 256, 1]
        assert row["samples"] == 3 and row["median_ms"] > 0
    assert (
        rows["e2e_auto"]["note"] == "post-processing on gl"
        and rows["e2e_cpu"]["note"] == "post-processing on cpu"
    )
    for key in ("e2e_auto", "e2e_cpu"):  # gpu_seg's masks: the reference post-processing of the model output
        check = rows[key]["vs_reference"]
        assert check["parity_ok"] is True and check["category_mismatch_fraction"] == 0
        assert check["confidence_mean_abs_error"] < 1e-7
    assert rows["e2e_video"]["vs_reference"] == {}  # the last video frame is not the photo
    goals = {g["name"]: g for g in report["goals"]}
    speed = next(g for name, g in goals.items() if name.startswith("end-to-end selfie"))
    parity = next(g for name, g in goals.items() if name.startswith("end-to-end parity"))
    if mediapipe:
        assert rows["e2e_auto"]["ratio_to_mediapipe"] > 0 and rows["e2e_video"]["ratio_to_mediapipe"] > 0
        assert speed["measured"] is not None
        assert parity["passed"] is True, parity["detail"]  # MediaPipe's own masks, end to end
    out = capsys.readouterr().out
    assert "End to end: selfie model on a 640x480 photo" in out and "frames/s" in out


def test_the_commit_is_gpu_segs_own_never_that_of_a_repository_around_an_installed_copy(tmp_path):
    """An installed gpu_seg in a virtual environment inside the user's own git project reported that
    project's commit as gpu_seg's."""
    import shutil
    import subprocess

    from gpu_seg.tools.bench import metadata

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    project = tmp_path / "project"
    installed = project / ".venv" / "site-packages" / "gpu_seg" / "tools" / "bench" / "metadata.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("# an installed copy\n")
    checkout = project / "src" / "metadata.py"
    checkout.parent.mkdir()
    checkout.write_text("# a checkout\n")

    def git(*argv: str) -> str:
        command = ["git", "-C", str(project), "-c", "user.name=u", "-c", "user.email=u@x", *argv]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", "src/metadata.py")
    git("commit", "-q", "-m", "x")
    assert metadata._git(installed) == {"commit": None, "dirty": None}
    assert metadata._git(checkout) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
