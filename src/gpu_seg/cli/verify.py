"""Check the GL path, the fast CPU path and the numpy reference against real MediaPipe CPU on a seeded
random battery.

Each case draws an activation (none, sigmoid, softmax), a channel count from
{1, 2, 3, 4, 5, 8, 21, 64}, a tensor size, an output size (upscale, downscale, same size or odd
sizes), a logit scale between 1 and 50 and a content kind (Gaussian logits, quantised logits with
exact ties, smooth model-like logits). The tensor goes through gpu_seg's GL path, gpu_seg's CPU
reference and MediaPipe's ImageSegmenter (CPU delegate, a constant model from gpu_seg.oracle).

Tolerances: confidence masks within 2e-5 of MediaPipe's (plus 1e-5 relative with activation
none); category masks identical except at near ties, output pixels whose top two align-corners
interpolated values differ by less than 1e-5; one-class category masks identical.

Needs the mediapipe extra: pip install "gpu_seg[mediapipe]".
Exit status: 0 when every case is within tolerance, 1 otherwise (also when the --json file cannot be
written), 2 without MediaPipe or for bad arguments, 130 after Ctrl-C and 143 after SIGTERM, with the
report of the cases checked so far (INTERRUPTED; "interrupted" in the JSON).
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from ..tools import oracle
from ..tools.messages import INSTALL_MEDIAPIPE
from ..tools.parity import Parity
from ..tools.verify import DEFAULT_CASES, VerifyReport, run_verify
from . import partial_report_on_interrupt
from .args import non_negative_int, output_file, positive_int, write_json

if TYPE_CHECKING:
    from rich.console import Console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--cases", type=positive_int, default=DEFAULT_CASES, help=f"random cases (default {DEFAULT_CASES})"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the battery (default 0)")
    parser.add_argument(
        "--json", type=output_file, metavar="PATH", help="also write every case's figures to PATH as JSON"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if not oracle.mediapipe_available():
        print(
            "gpu-seg verify compares against real MediaPipe, which is not installed.\n"
            f"Install the extra: {INSTALL_MEDIAPIPE}",
            file=sys.stderr,
        )
        return 2
    from .console import progress_bar

    with partial_report_on_interrupt(functools.partial(_report, args)):  # the cases checked so far
        with progress_bar(args.cases, "verify", enabled=not args.quiet) as progress:
            report = run_verify(args.cases, args.seed, progress)
    return _report(args, report)


def _report(args: argparse.Namespace, report: VerifyReport) -> int:
    """Write the JSON, print the report; the exit status."""
    from .console import stdout

    if report.gl_error is not None:
        print(
            f"gpu-seg verify: {report.gl_error}; the GL path cannot be checked (the reference and the fast "
            "CPU path are), so the run fails",
            file=sys.stderr,
        )
    # first: a closed stdout must not lose the figures; a file that cannot be written not the report
    unwritten = write_json(args.json, report.to_dict(), indent=1, default=float) if args.json else None
    print_report(stdout(), report)
    if unwritten:
        print(f"gpu-seg verify: {unwritten}", file=sys.stderr)
    if report.interrupted:  # the caller raises the interrupt again
        return 1
    if report.gl_error is not None:
        print(
            f"verify failed: {report.gl_error}; {len(report.outcomes)} case(s) not checked on GL",
            file=sys.stderr,
        )
        return 1
    if report.failed:
        print(f"verify failed: {report.failed} case(s) outside tolerance", file=sys.stderr)
        return 1
    return 1 if unwritten else 0


def _mismatch_cell(p: Parity | None) -> str:
    if p is None:
        return "n/a"
    if not p.mismatches:
        return "0"
    return f"{p.mismatches} ({p.near_ties} tie)"


def _conf_cell(p: Parity | None) -> str:
    if p is None:
        return "n/a"
    return f"{p.confidence_error:.2g}"


def print_report(console: Console, report: VerifyReport) -> None:
    """The battery as a table (one row per case, then each failing case's problems) and the worst figures."""
    from .console import BAD, GOOD, Text, row, table

    print_line = console.print
    print_line(
        f"gpu-seg verify: {len(report.outcomes)} cases, seed {report.seed}; "
        f"GL: {report.renderer or report.gl_error}; MediaPipe {report.mediapipe}"
    )
    headers = ["case", "activation", "tensor", "output", "content", "scale"]
    headers += ["gl conf err", "ref conf err", "gl cat mism", "ref cat mism", "status"]
    grid = table(headers, "rllllrrrrrl")
    for o in report.outcomes:
        c = o.case
        h, w, ch = c.tensor_shape
        row(
            grid,
            str(c.index),
            c.activation,
            f"{h}x{w}x{ch}",
            f"{c.output_size[0]}x{c.output_size[1]} ({c.size_kind})",
            c.content,
            f"{c.scale:.1f}",
            _conf_cell(o.gl),
            _conf_cell(o.reference),
            _mismatch_cell(o.gl),
            _mismatch_cell(o.reference),
            Text("ok", GOOD) if o.ok else Text("FAIL", BAD),
        )
    print_line(grid)
    if report.interrupted:
        print_line(Text(f"INTERRUPTED after {len(report.outcomes)} cases (figures so far)", BAD))
    for o in report.outcomes:
        for problem in o.problems:
            print_line(f"  case {o.case.index}: {problem}")
    figures = {k: "n/a" if v is None else v for k, v in report.summary().items()}  # None: not checked

    def worst(key: str) -> str:
        value = figures[key]
        return value if isinstance(value, str) else f"{value:.2g}"

    def mismatches(side: str) -> str:
        if figures[f"{side}_category_mismatches"] == "n/a":
            return "n/a"
        return (
            f"{figures[f'{side}_category_mismatches']} ({figures[f'{side}_category_near_ties']} at near ties)"
        )

    print_line(
        f"worst: GL conf |diff| {worst('worst_gl_confidence_error')}, "
        f"reference conf |diff| {worst('worst_reference_confidence_error')}; category mismatches: "
        f"GL {mismatches('gl')}, reference {mismatches('reference')}, fast CPU {mismatches('cpu')}; "
        f"fast CPU conf |diff| {worst('worst_cpu_confidence_error')}; "
        f"{figures['passed']}/{figures['cases']} cases within tolerance"
    )
