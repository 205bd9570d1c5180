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

Exit status: 0 when no frame mismatched and every frame returned; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..tools.soak import DEFAULT_WARMUP, SoakReport, soak
from ..types import Activation
from .args import non_negative_float, non_negative_int, output_size, positive_int, tensor_shape

if TYPE_CHECKING:
    from rich.console import Console


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        default=(160, 120),
        metavar="WxH",
        help="mask size (default 160x120)",
    )
    parser.add_argument(
        "--tensor",
        type=tensor_shape,
        default=(32, 32, 6),
        metavar="HxWxC",
        help="shape of the random logits, a new tensor every frame (default 32x32x6)",
    )
    parser.add_argument(
        "--activation",
        choices=[a.value for a in Activation],
        default=Activation.SOFTMAX.value,
        help="the processor's activation (default softmax)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tensors (default 0)")
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
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the figures to PATH as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .console import progress_bar, stdout

    with progress_bar(args.frames, "soak", enabled=not args.quiet) as progress:
        report = soak(
            frames=args.frames,
            lose_every=args.lose_every,
            output_size=args.output_size,
            tensor_shape=args.tensor,
            activation=args.activation,
            seed=args.seed,
            budget=args.budget,
            backoff=args.backoff,
            warmup=args.warmup,
            progress=progress,
        )
    if args.json:  # first: a closed stdout must not lose the figures
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report.to_dict(), out, indent=2)
            out.write("\n")
    print_report(stdout(), report)
    if not report.ok:
        print("soak failed: mismatched frames or frames that raised", file=sys.stderr)
    return 0 if report.ok else 1


def _figures(report: SoakReport) -> list[tuple[str, str]]:
    rows = [
        ("frames", f"{report.frames} (+{report.warmup_frames} warm-up), {report.frames_returned} returned"),
        (
            "losses",
            f"{report.losses} injected, {report.context_losses} detected, {report.losses_skipped} skipped",
        ),
        ("rebuilds", str(report.rebuilds)),
        ("GL frames", str(report.gl_frames)),
        ("fallback (CPU) frames", str(report.cpu_frames)),
        ("mismatched frames", str(report.mismatched_frames)),
        ("overwritten results", str(report.overwritten_frames)),
        ("frames that raised", str(report.error_frames)),
        ("worst confidence |diff|", f"{report.worst_confidence_error:.3g}"),
        ("near-tie category pixels", str(report.near_tie_pixels)),
    ]
    for name, snap in (
        ("before the processor", report.before),
        ("start (after warm-up)", report.start),
        (f"middle (frame {report.middle.frame if report.middle else '-'})", report.middle),
        (f"end (frame {report.end.frame if report.end else '-'})", report.end),
    ):
        if snap is not None:
            text = f"RSS {snap.rss_kib / 1024:.1f} MiB"
            if snap.malloc_in_use_kib is not None:
                text += f" (malloc in use {snap.malloc_in_use_kib / 1024:.1f} MiB)"
            if snap is not report.before:
                text += f", {snap.live_gl_objects} live GL objects"
            rows.append((name, text))
    rows.append(("RSS growth start -> end", f"{report.rss_growth_kib / 1024:+.2f} MiB ({report.rss_source})"))
    after = sorted(set(report.gl_objects_after_rebuilds))
    rows.append(
        (
            "GL objects after rebuilds",
            f"{after or '-'} vs baseline {report.baseline_gl_objects}: "
            + ("back to baseline" if report.rebuilds_back_to_baseline else "NOT back to baseline"),
        )
    )
    rows.append(("GL objects after close", str(report.live_gl_objects_after_close)))
    rows.append(("events", ", ".join(f"{k}={v}" for k, v in sorted(report.events.items())) or "-"))
    rows.append(("time", f"{report.duration_s:.1f} s"))
    return rows


def print_report(console: Console, report: SoakReport) -> None:
    """The figures as two columns, the first mismatches and errors, then OK or FAILED."""
    from rich.table import Table

    from .console import BAD, GOOD, Text, row

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in _figures(report):
        row(grid, name, value)
    console.print(grid)
    for line in [*report.first_mismatches, *report.errors[:10]]:
        console.print(f"  {line}")
    console.print(Text("OK", GOOD) if report.ok else Text("FAILED", BAD))
