"""Time gpu_seg against MediaPipe CPU, OpenCV and PyTorch on the same tensors, side by side.

Presets (tensor -> output size, activation), modelled on MediaPipe's segmentation models:
selfie 256x256x1 sigmoid -> 640x480, hair 512x512x2 softmax -> 1280x720, multiclass 256x256x6
softmax -> 1280x720, deeplab 257x257x21 softmax -> 1920x1080; or any --tensor/--output-size.
With no arguments every preset runs, in every output mode (both, category, confidence).

Each preset is timed on a model-like tensor (smooth class regions, mostly background; the fraction
of class-boundary texels is printed) and on i.i.d. noise logits (the worst case for
content-dependent shortcuts). Backends: gpu_seg GL (preallocated outputs, and without; as zero-copy
views; as frames in flight, two queued at a time, in ms per frame), gpu_seg CPU (the fast exact CPU
path), the numpy reference, OpenCV (cv2.resize + numpy argmax), PyTorch CPU (F.interpolate +
softmax/argmax) when installed, PyTorch CUDA (host->host through pinned buffers, and resident) where
torch.cuda.is_available(), MediaPipe CPU (ImageSegmenter on a constant model; only segment() is
timed) when installed, plus GL variants (f16/u8/channel-subset confidence masks) on the multiclass
and deeplab presets.

--preset end-to-end (opt-in, ~5 s once the model is cached): the selfie model on a 640x480 photo,
both masks: gpu_seg's ImageSegmenter.segment() (post-processing auto and cpu) against MediaPipe's
ImageSegmenter.segment() (CPU delegate), and video-mode frames/s of both.

Method: the same tensor goes to every backend. Each backend runs one untimed check frame and
--warmup frames, then up to --frames timed frames back to back (it stops early once it has 3
frames and has spent --max-seconds), after a short pause that lets the previous backend's worker
threads go idle. Reported: median and IQR, the ratio to MediaPipe CPU, bytes moved (tensor in +
masks out), the floor time of those bytes at the copy bandwidth measured in the same run
(np.copyto of a 256 MiB buffer, read + write), the agreement of each backend with MediaPipe's
semantics, the performance goals, and the environment (CPU, GL renderer, versions, git commit).

Exit status: 0 after a run, 1 when the --json or --plot file cannot be written or no row could be
timed (every backend asked for unavailable), 2 for bad arguments,
130 after Ctrl-C and 143 after SIGTERM, with the report of the cells timed so far (INTERRUPTED;
"interrupted" in the JSON).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import numpy as np

from ..tools.bench.backends import PEERS
from ..tools.bench.cases import (
    MODES,
    NOISE_MODES,
    PRESETS,
    VARIANT_PRESETS,
    BenchCase,
    build_cases,
    custom_preset,
)
from ..tools.bench.end_to_end import E2E_PRESET, end_to_end_case
from ..tools.bench.run import (
    DEFAULT_BANDWIDTH_MIB,
    DEFAULT_FRAMES,
    DEFAULT_MAX_SECONDS,
    DEFAULT_WARMUP,
    BenchRun,
    BenchSettings,
)
from ..tools.messages import INSTALL_BENCH
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
    write_json,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    what = parser.add_argument_group("what to time")
    what.add_argument(
        "--preset",
        action="append",
        choices=[*PRESETS, E2E_PRESET],
        default=None,
        help="a preset to run (repeatable; default: all tensor presets unless --tensor is given). "
        f"'{E2E_PRESET}' (opt-in, ~5 s once the model is cached): the selfie model on a 640x480 photo, "
        "gpu_seg's ImageSegmenter (auto and cpu) against MediaPipe's, and video-mode frames/s "
        "(needs ai-edge-litert, scikit-image and the model, fetched once)",
    )
    what.add_argument("--tensor", type=tensor_shape, metavar="HxWxC", help="a custom tensor shape")
    what.add_argument(
        "--output-size",
        type=output_size,
        metavar="WxH",
        help="mask size of the custom tensor (default: its size)",
    )
    what.add_argument(
        "--activation",
        choices=[a.value for a in Activation],
        help="activation of the custom tensor (default: sigmoid for one channel, else softmax)",
    )
    what.add_argument(
        "--outputs",
        nargs="+",
        choices=list(MODES),
        default=None,
        metavar="MODE",
        help="output modes: both, category, confidence (default: all three)",
    )
    what.add_argument(
        "--backends",
        nargs="+",
        choices=list(PEERS),
        default=None,
        metavar="NAME",
        help=f"backends: {', '.join(PEERS)} (default: all; unavailable ones are reported)",
    )
    what.add_argument(
        "--noise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also time i.i.d.-noise logits (worst case), outputs {'/'.join(NOISE_MODES)} (default: on)",
    )
    what.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="GL rows with f16/u8/one-channel confidence masks "
        f"(default: on for {', '.join(VARIANT_PRESETS)})",
    )
    what.add_argument(
        "--alloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the GL path without preallocated outputs, as zero-copy views and with frames in "
        "flight (default: on, model-like tensors; --no-alloc leaves out all three)",
    )
    how = parser.add_argument_group("method")
    how.add_argument(
        "--frames", type=positive_int, help=f"timed frames per backend (default {DEFAULT_FRAMES})"
    )
    how.add_argument(
        "--warmup", type=non_negative_int, help=f"untimed frames per backend first (default {DEFAULT_WARMUP})"
    )
    how.add_argument(
        "--max-seconds",
        type=non_negative_float,
        metavar="S",
        help="stop timing a backend early once it has 3 frames and spent S seconds in a cell "
        f"(default {DEFAULT_MAX_SECONDS:g}; 0 = never)",
    )
    how.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bench tensors (default 0)")
    how.add_argument(
        "--bandwidth-mib",
        type=positive_int,
        help=f"buffer size of the copy-bandwidth measurement (default {DEFAULT_BANDWIDTH_MIB})",
    )
    how.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 frames, 1 warm-up, 1 s per backend, no pauses, 64 MiB bandwidth buffer "
        "(unless given)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=output_file, metavar="PATH", help="write every figure to PATH as JSON")
    out.add_argument(
        "--plot", type=output_file, metavar="PATH", help="write a PNG bar chart to PATH (needs matplotlib)"
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(bench_parser=parser)


def cases_from_args(args: argparse.Namespace) -> list[BenchCase]:
    """The tensors to time: one model-like (and one i.i.d.-noise) tensor per preset or custom shape."""
    names = list(dict.fromkeys(args.preset or ([] if args.tensor else PRESETS)))
    presets = [PRESETS[name] for name in names if name != E2E_PRESET]
    if args.tensor:
        presets.append(custom_preset(args.tensor, args.output_size, args.activation))
    cases = build_cases(presets, args.outputs or tuple(MODES), args.seed, args.noise, args.variants)
    if E2E_PRESET in names:
        cases.append(end_to_end_case())
    return cases


def _memory_problem(args: argparse.Namespace) -> str | None:
    """Why the custom tensor or the bandwidth buffer cannot fit in this machine's memory, or None."""
    if args.tensor is not None:
        h, w, c = args.tensor
        width, height = args.output_size or (w, h)
        tensors = 2 if args.noise else 1  # model-like and noise, float32
        needed = tensors * 4 * h * w * c + width * height * (4 * c + 1)  # + confidence and category
        what = f"--tensor {h}x{w}x{c}" + (f" with --output-size {width}x{height}" if args.output_size else "")
        problem = memory_problem(needed, f"{what} (the tensor and its masks)")
        if problem:
            return problem
    if args.bandwidth_mib is not None:
        return memory_problem(
            2 * args.bandwidth_mib << 20, f"--bandwidth-mib {args.bandwidth_mib} (two buffers)"
        )
    return None


def _plot_format_problem(path: str) -> str | None:
    """Why matplotlib cannot write a chart to ``path`` (its suffix names no format it has), or None."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.removeprefix(".").lower()  # as savefig reads it; none: PNG
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        known = ", ".join(sorted(formats))
        return f"--plot {path}: matplotlib cannot write {suffix!r} files (it writes {known})"
    return None


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser | None = getattr(args, "bench_parser", None)

    def usage_error(message: str) -> int:
        if parser is not None:
            parser.error(message)  # exits with status 2
        print(f"gpu-seg bench: error: {message}", file=sys.stderr)
        return 2

    if args.tensor is None and (args.output_size is not None or args.activation is not None):
        return usage_error("--output-size and --activation describe a custom tensor: give --tensor HxWxC too")
    if args.plot and not _matplotlib_available():
        return usage_error(f"--plot needs matplotlib, which is not installed: {INSTALL_BENCH}")
    if args.plot and args.json and os.path.realpath(args.plot) == os.path.realpath(args.json):
        return usage_error(
            f"--json and --plot name the same file ({args.json}): the plot would replace the figures"
        )
    problem = (_plot_format_problem(args.plot) if args.plot else None) or _memory_problem(args)
    if problem:
        return usage_error(problem)
    from .console import progress_bar

    settings = BenchSettings.choose(
        quick=args.quick,
        frames=args.frames,
        warmup=args.warmup,
        max_seconds=args.max_seconds,
        bandwidth_mib=args.bandwidth_mib,
        backends=args.backends,
        seed=args.seed,
        noise=args.noise,
        alloc=args.alloc,
    )
    bench = BenchRun(cases_from_args(args), settings)
    if not args.quiet:
        renderer = bench.gl_info.get("renderer", bench.gl_info.get("error"))
        print(f"copy bandwidth {bench.bandwidth['gbps']:.1f} GB/s; GL: {renderer}", file=sys.stderr)
        for case in bench.cases:
            print(f"tensor {case.title()}", file=sys.stderr)
    with partial_report_on_interrupt(functools.partial(_report, args)):  # the cells timed so far
        with progress_bar(bench.steps, "bench", enabled=not args.quiet) as progress:
            report = bench.run(progress)
    return _report(args, report)


def _report(args: argparse.Namespace, report: dict) -> int:
    """Write the JSON and the plot, print the report; the exit status."""
    from .bench_report import print_report
    from .console import stdout

    # first: a closed stdout must not lose the figures; a file that cannot be written not the report
    problems = {}
    if args.json:
        problems[args.json] = write_json(args.json, report, indent=1, default=_json_default)
    if args.plot and report["cases"]:  # an interrupted run may have timed nothing
        from ..tools.bench.plot import write_plot

        try:
            write_plot(report, args.plot)
            problems[args.plot] = None
        except OSError as exc:
            problems[args.plot] = f"cannot write {args.plot}: {exc.strerror or exc}"
    print_report(stdout(), report)
    for path, problem in problems.items():
        if problem:
            print(f"gpu-seg bench: {problem}", file=sys.stderr)
        else:
            print(f"wrote {path}")
    untimed = _nothing_timed(report)
    if untimed:
        print(f"gpu-seg bench: nothing was timed: {untimed}", file=sys.stderr)
    return 1 if any(problems.values()) or untimed else 0


def _nothing_timed(report: dict) -> str | None:
    """Why no row of a finished run has a time (every row unavailable), or None."""
    rows = report["cases"]
    if report.get("interrupted") or not rows or any(row.get("median_ms") is not None for row in rows):
        return None
    reasons = dict.fromkeys(str(row.get("unavailable") or "no time") for row in rows)
    return "; ".join(reasons)


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
