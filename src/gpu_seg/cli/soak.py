"""Soak test: run many frames through one processor, destroying its GL context every K frames.

Every frame gets a fresh seeded random tensor and is checked against the numpy reference
(``gpu_seg.reference_postprocess``): confidence masks within 2e-5 (plus 1e-5 relative with
``--activation none``), category masks identical except at near ties (output pixels whose top two
align-corners-interpolated values differ by less than 1e-5). The result of the previous frame is
checked again after each frame, so a mask that a later frame overwrote is caught too.

Before frame i (i > 0, i % K == 0) the processor's real EGL context is destroyed
(``gpu_seg.testing.lose_context``); the processor must notice, rebuild and recompute the frame.
The report gives frames, losses, rebuilds, GL and CPU (fallback) frames, mismatched frames, and the
resident memory (VmRSS) and live GL objects after warm-up, in the middle and at the end, and checks
that the live GL objects return to the warm-up count after every rebuild.

Modes (combine freely, except --segmenter):
  --idle S --idle-every N   every N frames no frame for S seconds; the processor releases its GL
                            objects (--idle-release: pp.trim(), or its own idle_release_after);
                            memory, GL objects, programs and GPU memory before, after the release
                            and after the wake-up frame
  --churn                   a new random output size every frame (a quarter to twice --output-size)
  --fallback-at F           exhaust the loss budget and lose the context before frame F: the first
                            CPU frame's latency against the median CPU frame after it
  --segmenter               the ImageSegmenter (selfie model, video mode) on a stream made from
                            scikit-image's photos, every frame checked against backend="cpu"

Exit status: 0 when every frame returned and matched and some ran on GL; 1 otherwise (also when the
--json file cannot be written); 2 for bad arguments; 130 after Ctrl-C and 143 after SIGTERM, with the
report of the frames run so far (INTERRUPTED; the JSON's interrupted_after).
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from ..tools.soak import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_WARMUP,
    IDLE_RELEASES,
    IdlePlan,
    SoakReport,
    segmenter_soak,
    soak,
)
from ..tools.soak.report import LoopReport, Snapshot
from ..types import Activation
from . import partial_report_on_interrupt
from .args import (
    memory_problem,
    non_negative_float,
    non_negative_int,
    output_file,
    output_size,
    positive_int,
    tensor_shape,
    wait_seconds,
    write_json,
)

if TYPE_CHECKING:
    from rich.console import Console

#: Defaults of the tensor soak for the options --segmenter does not take.
DEFAULT_OUTPUT_SIZE = (160, 120)
DEFAULT_TENSOR = (32, 32, 6)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--frames", type=positive_int, default=2000, help="frames to run and check (default 2000)"
    )
    parser.add_argument(
        "--lose-every",
        type=non_negative_int,
        default=250,
        metavar="K",
        help="destroy the GL context before every K-th frame (default 250; 0 = never)",
    )
    parser.add_argument(
        "--output-size",
        type=output_size,
        default=None,
        metavar="WxH",
        help="mask size (default 160x120; with --churn the nominal size; with --segmenter the video "
        f"frame size, default {DEFAULT_FRAME_SIZE[0]}x{DEFAULT_FRAME_SIZE[1]})",
    )
    parser.add_argument(
        "--tensor",
        type=tensor_shape,
        default=None,
        metavar="HxWxC",
        help="shape of the random logits, a new tensor every frame (default 32x32x6)",
    )
    parser.add_argument(
        "--activation",
        choices=[a.value for a in Activation],
        default=None,
        help="the processor's activation (default softmax)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the random tensors (default 0)"
    )
    parser.add_argument(
        "--budget",
        type=non_negative_int,
        default=None,
        help="loss-budget capacity: losses rebuilt before falling back to the CPU (default "
        "max(3, frames // K + 1), so every injected loss is rebuilt; 0 = fall back at the first loss)",
    )
    parser.add_argument(
        "--backoff",
        type=non_negative_float,
        default=None,
        metavar="SECONDS",
        help="base delay of the rebuild backoff for losses less than 5 s apart, doubling up to 2 s "
        "(default: the library's 0.05; 0 = rebuild at once)",
    )
    parser.add_argument(
        "--warmup",
        type=positive_int,
        default=DEFAULT_WARMUP,
        help=f"checked frames before the baseline RSS and GL-object figures (default {DEFAULT_WARMUP})",
    )
    modes = parser.add_argument_group("modes")
    modes.add_argument(
        "--idle",
        type=wait_seconds,
        default=None,
        metavar="SECONDS",
        help="idle periods of SECONDS without frames (every --idle-every frames); with an automatic "
        "release keep it well above the soak's own pauses to measure memory (0.1-0.2 s)",
    )
    modes.add_argument(
        "--idle-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="an idle period before every N-th frame (default: frames // 4)",
    )
    modes.add_argument(
        "--idle-release",
        choices=IDLE_RELEASES,
        default="auto-context",
        help="how the processor lets go of its GL objects while idle: pp.trim(), "
        "pp.trim(release_context=True), or by itself with idle_release_after=SECONDS/2 (and "
        "idle_release_context=True) (default auto-context)",
    )
    modes.add_argument("--churn", action="store_true", help="a new random output size every frame")
    modes.add_argument(
        "--in-flight",
        action="store_true",
        help="submit each frame (pp.submit, mapped readback) and collect it one frame later, every "
        "other one as a zero-copy view whose arrays are checked again after the next frame",
    )
    modes.add_argument(
        "--gl-passes",
        choices=("auto", "fragment", "compute"),
        default="auto",
        help="the processor's gl_passes: 'compute' soaks the GPUs' default passes (GL 4.3) on any "
        "machine, llvmpipe included (default auto)",
    )
    modes.add_argument(
        "--fallback-at",
        type=non_negative_int,
        default=None,
        metavar="F",
        help="exhaust the loss budget and lose the context before frame F (at most frames - 3): the "
        "first fallback frame's latency against the median CPU frame after it",
    )
    modes.add_argument(
        "--segmenter",
        action="store_true",
        help="soak the ImageSegmenter on a video stream made from real photos (needs ai-edge-litert "
        "and scikit-image), every frame checked against the same segmenter with backend='cpu'",
    )
    modes.add_argument(
        "--model", metavar="PATH", default=None, help="with --segmenter: the .tflite (default: selfie model)"
    )
    modes.add_argument(
        "--landscape", action="store_true", help="with --segmenter: the landscape selfie model"
    )
    parser.add_argument(
        "--json",
        type=output_file,
        metavar="PATH",
        default=None,
        help="also write the figures to PATH as JSON",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(soak_parser=parser)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of options, or None."""
    if args.segmenter:
        given = [
            name
            for name, value in (
                ("--tensor", args.tensor),
                ("--activation", args.activation),
                ("--idle", args.idle),
                ("--churn", args.churn or None),
                ("--in-flight", args.in_flight or None),
                ("--gl-passes", None if args.gl_passes == "auto" else args.gl_passes),
                ("--fallback-at", args.fallback_at),
            )
            if value is not None
        ]
        if given:
            return f"{', '.join(given)} cannot be combined with --segmenter"
        return _memory_problem(args)
    if args.model is not None or args.landscape:
        return "--model and --landscape go with --segmenter"
    if args.idle_every is not None and args.idle is None:
        return "--idle-every needs --idle SECONDS"
    if args.fallback_at is not None and args.fallback_at > args.frames - 3:
        return f"--fallback-at must leave two CPU frames after it: at most --frames - 3 = {args.frames - 3}"
    return _memory_problem(args)


def _memory_problem(args: argparse.Namespace) -> str | None:
    """Why one frame of the soak cannot fit in this machine's memory, or None."""
    if args.segmenter:
        width, height = args.output_size or DEFAULT_FRAME_SIZE
        needed = width * height * (3 + 1)  # the RGB frame and its category mask
        return memory_problem(needed, f"--output-size {width}x{height} (a video frame and its mask)")
    h, w, c = args.tensor or DEFAULT_TENSOR
    width, height = args.output_size or DEFAULT_OUTPUT_SIZE
    area = width * height * (4 if args.churn else 1)  # churn: up to twice as wide and as high
    needed = 12 * h * w * c + area * (4 * c + 1)  # float64 draw + float32 tensor, confidence + category
    what = f"--tensor {h}x{w}x{c}" + (f" with --output-size {width}x{height}" if args.output_size else "")
    what += " and --churn" if args.churn else ""
    return memory_problem(needed, f"{what} (the tensor and its masks)")


def _usage_error(args: argparse.Namespace, message: str) -> int:
    parser: argparse.ArgumentParser | None = getattr(args, "soak_parser", None)
    if parser is not None:
        parser.error(message)  # exits with status 2
    print(f"gpu-seg soak: error: {message}", file=sys.stderr)
    return 2


def _run_soak(args: argparse.Namespace, progress) -> LoopReport:
    if args.segmenter:
        return segmenter_soak(
            frames=args.frames,
            lose_every=args.lose_every,
            frame_size=args.output_size or DEFAULT_FRAME_SIZE,
            model=args.model,
            landscape=args.landscape,
            budget=args.budget,
            backoff=args.backoff,
            warmup=args.warmup,
            progress=progress,
        )
    idle = None
    if args.idle is not None:
        idle = IdlePlan(args.idle, args.idle_every or max(1, args.frames // 4), args.idle_release)
    return soak(
        frames=args.frames,
        lose_every=args.lose_every,
        output_size=args.output_size or DEFAULT_OUTPUT_SIZE,
        tensor_shape=args.tensor or DEFAULT_TENSOR,
        activation=args.activation or Activation.SOFTMAX.value,
        seed=args.seed,
        budget=args.budget,
        backoff=args.backoff,
        warmup=args.warmup,
        progress=progress,
        idle=idle,
        churn=args.churn,
        fallback_at=args.fallback_at,
        in_flight=args.in_flight,
        gl_passes=args.gl_passes,
    )


def run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem is not None:
        return _usage_error(args, problem)
    from ..errors import GpuSegError
    from .console import progress_bar

    with partial_report_on_interrupt(functools.partial(_report, args)):  # the frames run so far
        try:
            with progress_bar(args.frames, "soak", enabled=not args.quiet) as progress:
                report = _run_soak(args, progress)
        except (ImportError, GpuSegError, OSError) as exc:  # a missing extra, an unusable model
            print(f"gpu-seg soak: {exc}", file=sys.stderr)
            return 1
    return _report(args, report)


def _report(args: argparse.Namespace, report: LoopReport) -> int:
    """Write the JSON, print the report; the exit status."""
    from .console import stdout

    # first: a closed stdout must not lose the figures; a file that cannot be written not the report
    unwritten = write_json(args.json, report.to_dict(), indent=2) if args.json else None
    print_report(stdout(), report)
    if report.interrupted_after is not None:  # the caller raises the interrupt again
        if unwritten:
            print(f"gpu-seg soak: {unwritten}", file=sys.stderr)
        return 1
    if not report.gl_frames:
        print("soak failed: no frame ran on GL (is there a GL context? see gpu-seg info)", file=sys.stderr)
    elif not report.ok:
        print(
            "soak failed: mismatched frames, frames that raised or an incomplete idle release",
            file=sys.stderr,
        )
    if unwritten:
        print(f"gpu-seg soak: {unwritten}", file=sys.stderr)
    return 0 if report.ok and not unwritten else 1


# ----------------------------------------------------------------------------- the report
def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _snapshot_text(snap: Snapshot, gl: bool = True) -> str:
    text = f"RSS {_mib(snap.rss_kib)}"
    if snap.malloc_in_use_kib is not None:
        text += f" (malloc in use {_mib(snap.malloc_in_use_kib)})"
    if gl:
        text += f", {snap.live_gl_objects} live GL objects, {snap.programs} programs"
        if snap.gpu_memory is not None:
            text += f", GPU memory {_gpu_memory(snap.gpu_memory)}"
    return text


def _gpu_memory(memory: dict) -> str:
    if "available_kib" in memory:
        return f"{_mib(memory['available_kib'])} available of {_mib(memory['total_kib'])}"
    return ", ".join(f"{k} {v}" for k, v in memory.items() if k != "source")


def _common_figures(report: LoopReport, wrong: str) -> list[tuple[str, str]]:
    rows = [
        ("frames", f"{report.frames} (+{report.warmup_frames} warm-up), {report.frames_returned} returned"),
        (
            "losses",
            f"{report.losses} injected, {report.context_losses} detected, {report.losses_skipped} skipped",
        ),
        ("rebuilds", str(report.rebuilds)),
        ("GL frames", f"{report.gl_frames} (median {_ms(report.gl_frame_ms)})"),
        ("CPU frames", f"{report.cpu_frames} (median {_ms(report.cpu_frame_ms)})"),
        (wrong, str(report.mismatched_frames)),
    ]
    return rows


def _memory_figures(report: LoopReport) -> list[tuple[str, str]]:
    rows = []
    for name, snap in (
        ("before the processor", report.before),
        ("start (after warm-up)", report.start),
        (f"middle (frame {report.middle.frame if report.middle else '-'})", report.middle),
        (f"end (frame {report.end.frame if report.end else '-'})", report.end),
    ):
        if snap is not None:
            rows.append((name, _snapshot_text(snap, gl=snap is not report.before)))
    if report.start is None:  # interrupted before the baseline
        rows.append(("RSS growth start -> end", "n/a (interrupted during warm-up: no baseline)"))
    elif report.end is None:
        rows.append(("RSS growth start -> end", "n/a (no end snapshot)"))
    else:
        rows.append(
            ("RSS growth start -> end", f"{report.rss_growth_kib / 1024:+.2f} MiB ({report.rss_source})")
        )
    timeline = " ".join(f"{frame}:{rss / 1024:.1f}" for frame, rss in report.rss_timeline)
    rows.append(("RSS over time (frame:MiB)", timeline or "-"))
    rows.append(("most live GL objects", str(report.max_live_gl_objects)))
    after = sorted(set(report.gl_objects_after_rebuilds))
    verdict = {
        True: "back to baseline",
        False: "NOT back to baseline",
        None: "n/a (sizes change every frame)",
    }
    back = verdict[report.rebuilds_back_to_baseline] if report.start is not None else "n/a (no baseline)"
    baseline = report.baseline_gl_objects
    rows.append(("GL objects after rebuilds", f"{after or '-'} vs baseline {baseline}: {back}"))
    rows.append(("GL objects after close", str(report.live_gl_objects_after_close)))
    rows.append(("events", ", ".join(f"{k}={v}" for k, v in sorted(report.events.items())) or "-"))
    rows.append(("time", f"{report.duration_s:.1f} s"))
    return rows


def _tensor_figures(report: SoakReport) -> list[tuple[str, str]]:
    rows = _common_figures(report, "mismatched frames")
    rows += [
        ("overwritten results", str(report.overwritten_frames)),
        ("frames that raised", str(report.error_frames)),
        ("worst confidence |diff|", f"{report.worst_confidence_error:.3g}"),
        ("near-tie category pixels", str(report.near_tie_pixels)),
    ]
    if report.gl_passes != "auto":
        rows.append(("GL passes", report.gl_passes))
    if report.churn and report.churn_min_size and report.churn_max_size:
        (w0, h0), (w1, h1) = report.churn_min_size, report.churn_max_size
        rows.append(
            ("output-size churn", f"{report.distinct_output_sizes} sizes from {w0}x{h0} to {w1}x{h1}")
        )
    if report.fallback_at is not None:
        ratio = report.first_fallback_ratio
        rows.append(
            (
                f"first fallback frame (frame {report.fallback_at})",
                f"{_ms(report.first_fallback_frame_ms)} on {report.fallback_frame_backend} vs steady CPU "
                f"frame {_ms(report.steady_cpu_frame_ms)}" + (f": {ratio:.2f}x" if ratio is not None else ""),
            )
        )
    return rows + _memory_figures(report)


def _segmenter_figures(report) -> list[tuple[str, str]]:
    rows = [("model", f"{report.model} ({report.model_channels} channel(s), activation {report.activation})")]
    rows.append(("video", f"{report.frame_size[0]}x{report.frame_size[1]} frames from scikit-image photos"))
    rows += _common_figures(report, "wrong frames (vs backend='cpu')")
    rows += [
        ("frames that raised", str(report.error_frames)),
        ("worst confidence |diff|", f"{report.worst_confidence_error:.3g}"),
        ("near-tie category pixels", str(report.near_tie_pixels)),
        (
            "throughput",
            f"{report.fps:.1f} frames/s (model {_ms(report.model_ms)}, post-processing "
            f"{_ms(report.postprocess_ms)} per frame)"
            if report.fps
            else "-",
        ),
    ]
    return rows + _memory_figures(report)


def _idle_table(report: SoakReport):
    from .console import row, table

    grid = table(
        [
            "period",
            "frame",
            "release",
            "before",
            "after release",
            "released after",
            "after wake-up",
            "wake ms",
        ],
        "rrllllrr",
    )
    for p in report.idle_periods:
        row(
            grid,
            str(p.index),
            str(p.frame),
            p.method,
            _snapshot_text(p.before),
            _snapshot_text(p.released) if p.released else "NOT RELEASED",
            "-" if p.release_s is None else f"{p.release_s:.2f} s",
            _snapshot_text(p.woken) if p.woken else "-",
            _ms(p.wake_frame_ms).removesuffix(" ms") + (f" ({p.wake_backend})" if p.wake_backend else ""),
        )
    return grid


def print_report(console: Console, report: LoopReport) -> None:
    """The figures as two columns, the idle periods, the first mismatches and errors, then OK or FAILED."""
    from rich.table import Table

    from .console import BAD, GOOD, Text, row

    figures = _tensor_figures(report) if isinstance(report, SoakReport) else _segmenter_figures(report)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in figures:
        row(grid, name, value)
    console.print(grid)
    if isinstance(report, SoakReport) and report.unplanned_releases:
        console.print(
            f"\n{report.unplanned_releases} automatic release(s) outside the idle periods: a pause of the "
            f"soak to measure memory (up to {report.measure_pause_s:.2f} s) outlasted --idle / 2; "
            "choose a longer --idle"
        )
    if isinstance(report, SoakReport) and report.idle_periods:
        console.print(
            f"\nIdle periods ({report.idle_seconds:g} s every {report.idle_every} frames, release "
            f"{report.idle_release}; baseline after warm-up: {_snapshot_text(report.start)})"
            if report.start
            else "\nIdle periods"
        )
        console.print(_idle_table(report))
    for line in [*report.first_mismatches, *report.errors[:10]]:
        console.print(f"  {line}")
    if report.interrupted_after is not None:
        stopped = (
            f"INTERRUPTED after {report.interrupted_after} of {report.frames} frames (the figures so far)"
        )
        console.print(Text(stopped, BAD))
        return
    console.print(Text("OK", GOOD) if report.ok else Text("FAILED", BAD))
