"""The soak run (``gpu-seg soak`` / ``gpu_seg.tools.soak.soak``): many frames, real context losses.

Everything runs on the real EGL context of the machine (Mesa llvmpipe in CI); the losses are real
``eglDestroyContext`` calls (``gpu_seg.testing.lose_context``), and every frame is checked against
the numpy reference.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gpu_seg.cli import main
from gpu_seg.reference import reference_postprocess
from gpu_seg.tools.soak import compare, soak
from gpu_seg.types import Activation, Result

from .process_memory import check_rss_growth

FRAMES = 3000
LOSE_EVERY = 300
#: Bound on VmRSS growth from the end of warm-up to the end of the 3000-frame, 9-loss soak.
#: Measured here (Mesa llvmpipe, moderngl 5.13, glibc 2.36, 2 cores): +1.1 to +2.8 MiB over a
#: dozen runs. About 1.4 MiB comes with the first rebuild (code paths and driver state touched
#: once) and about 60 KiB with each further one: moderngl never frees a Context, which keeps its
#: loader and the function addresses it loaded (~45 KiB of Python objects), plus ~14 KiB of
#: malloc'd driver memory. Frames without losses do not grow the RSS at all. 8 MiB leaves room
#: for allocator noise and still fails on a real leak: one leaked 48x40x4 float32 mask per frame
#: is 30 KiB x 3000 = 88 MiB; 3 KiB per frame, or ~0.7 MiB per rebuild, is enough to cross it.
#: The RSS is read after gc.collect() and malloc_trim(0): without the trim, glibc's second thread
#: arena (about 11 MB, filled once when a new GL thread starts before the old one has returned its
#: arena) shows in some runs as a one-off step of that size, which is free memory, not a leak.
RSS_GROWTH_BOUND_KIB = 8 * 1024


def test_soak_rebuilds_every_loss_with_correct_frames_and_no_leak():
    started = time.perf_counter()
    report = soak(
        frames=FRAMES,
        lose_every=LOSE_EVERY,
        output_size=(48, 40),
        tensor_shape=(16, 16, 4),
        activation="softmax",
        seed=1,
    )
    elapsed = time.perf_counter() - started
    total = FRAMES + report.warmup_frames
    expected_losses = (FRAMES - 1) // LOSE_EVERY  # before frames 300, 600, ..., 2700

    assert report.error_frames == 0, report.errors
    assert report.frames_returned == total
    assert report.mismatched_frames == 0, report.first_mismatches
    assert report.overwritten_frames == 0, report.first_mismatches

    assert report.losses == expected_losses
    assert report.losses_skipped == 0
    assert report.context_losses == expected_losses
    assert report.rebuilds == report.losses
    assert report.events == {"context_lost": expected_losses, "rebuilt": expected_losses}
    assert report.gl_frames == total and report.cpu_frames == 0

    baseline = report.baseline_gl_objects
    assert baseline > 1  # the context plus the pipeline's objects
    assert report.gl_objects_after_rebuilds == [baseline] * expected_losses
    assert report.rebuilds_back_to_baseline
    assert report.middle is not None and report.end is not None
    assert report.middle.live_gl_objects == report.end.live_gl_objects == baseline
    assert report.live_gl_objects_after_close == 0

    check_rss_growth(
        report.rss_growth_kib,
        RSS_GROWTH_BOUND_KIB,
        f"soak, warm-up to end (after each rebuild: {report.rss_after_rebuilds_kib})",
    )
    assert report.ok
    print(
        f"soak: {report.frames} frames, {report.losses} losses, {report.rebuilds} rebuilds, "
        f"RSS start/mid/end {report.start.rss_kib}/{report.middle.rss_kib}/{report.end.rss_kib} KiB "
        f"(+{report.rss_growth_kib} KiB), GL objects {baseline}, {elapsed:.1f} s"
    )


def test_cli_soak_writes_json_and_exits_0(tmp_path, capsys):
    path = tmp_path / "s.json"
    status = main(["soak", "--frames", "50", "--lose-every", "20", "--quiet", "--json", str(path)])
    assert status == 0
    out = capsys.readouterr().out
    assert "mismatched frames" in out and "OK" in out
    data = json.loads(path.read_text())
    for key in (
        "frames",
        "losses",
        "rebuilds",
        "gl_frames",
        "cpu_frames",
        "mismatched_frames",
        "frames_returned",
        "start",
        "middle",
        "end",
        "rss_growth_kib",
        "gl_objects_after_rebuilds",
        "rebuilds_back_to_baseline",
        "ok",
    ):
        assert key in data, key
    for point in ("start", "middle", "end"):
        assert set(data[point]) >= {"frame", "rss_kib", "live_gl_objects"}
    assert data["frames"] == 50 and data["mismatched_frames"] == 0 and data["ok"] is True
    assert data["output_size"] == [160, 120] and data["tensor_shape"] == [32, 32, 6]
    assert data["losses"] == 2 and data["rebuilds"] == 2  # before frames 20 and 40
    assert data["rebuilds_back_to_baseline"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--output-size", "0x5"],
        ["--output-size", "160"],
        ["--output-size", "ax5"],
        ["--frames", "-1"],
        ["--frames", "0"],
        ["--lose-every", "-3"],
        ["--tensor", "4x4"],
        ["--tensor", "4x4x0"],
        ["--budget", "-1"],
        ["--backoff", "-0.5"],
        ["--activation", "relu"],
    ],
)
def test_cli_soak_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["soak", "--quiet", *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_soak_function_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frames"):
        soak(frames=0)
    with pytest.raises(ValueError, match="output size"):
        soak(frames=1, output_size=(0, 5))
    with pytest.raises(ValueError, match="lose_every"):
        soak(frames=1, lose_every=-1)


def test_frame_check_catches_wrong_masks_and_allows_only_near_ties():
    """The checker is not vacuous: wrong values fail, and only true near ties may differ."""
    rng = np.random.default_rng(3)
    tensor = (rng.standard_normal((8, 8, 3)) * 4).astype(np.float32)
    tensor[:4, :, 1] = tensor[:4, :, 0]  # exact ties between channels 0 and 1 in the top half,
    tensor[:4, :, 2] = tensor[:4, :, 0] - 1  # where they are the top two
    size = (20, 16)
    expected = reference_postprocess(tensor, "softmax", size)
    ok = Result(expected.confidence_masks.copy(), expected.category_mask.copy(), "gl")
    assert compare(ok, expected, tensor, Activation.SOFTMAX, size)[0] is None

    conf = expected.confidence_masks.copy()
    conf[1, 5, 7] += 1e-3
    problem = compare(Result(conf, expected.category_mask, "gl"), expected, tensor, Activation.SOFTMAX, size)[
        0
    ]
    assert problem is not None and "confidence" in problem

    category = expected.category_mask.copy()
    category[-1, -1] = (category[-1, -1] + 1) % 3  # bottom row: no tie there
    problem = compare(
        Result(expected.confidence_masks, category, "gl"), expected, tensor, Activation.SOFTMAX, size
    )[0]
    assert problem is not None and "category" in problem

    category = expected.category_mask.copy()
    assert category[0, 0] == 0  # tie between 0 and 1 goes to the lowest index
    category[0, 0] = 1  # the other side of an exact tie: accepted, counted
    problem, _, near = compare(
        Result(expected.confidence_masks, category, "gl"), expected, tensor, Activation.SOFTMAX, size
    )
    assert problem is None and near == 1
