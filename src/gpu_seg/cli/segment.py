"""Segment images and videos with a real model and write the masks to files.

For each image ``NAME.ext``: ``DIR/NAME.mask.png`` (the category mask; one-class models: 0 =
foreground, 255 = background), with ``--confidence`` ``DIR/NAME.confidence.npy`` (float32
``(C, H, W)``), with ``--overlay`` ``DIR/NAME.overlay.png``. For a video ``NAME.ext`` (frames in video
mode): ``DIR/NAME/000000.mask.png``, ... ``DIR/manifest.jsonl`` gets one line per image or frame
(input, frame index, outputs, backend, ms). Folders given as inputs are searched for images and
videos. The default model is MediaPipe's selfie segmenter, fetched once from PyPI and cached.

Progress goes to stderr; a summary (frames, fps, backend, context losses) to stdout. Exit status:
0 when every input was processed, 1 otherwise (an unreadable input is reported and the rest run),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import GpuSegError
from ..segmenter.batch import BatchReport, BatchSegmenter, FrameRecord, estimate_frames, find_inputs
from .args import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="PATH",
        help="segmentation .tflite with MediaPipe metadata (default: the MediaPipe selfie model)",
    )
    parser.add_argument("--confidence", action="store_true", help="also write NAME.confidence.npy")
    parser.add_argument("--overlay", action="store_true", help="also write NAME.overlay.png")
    parser.add_argument(
        "--backend",
        choices=("auto", "gl", "cpu"),
        default="auto",
        help="post-processing backend (default auto)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="LiteRT threads (default: LiteRT's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_bytes(path: Path | None) -> bytes:
    if path is None:
        from ..models import selfie_segmenter

        path = selfie_segmenter()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GpuSegError(f"cannot read the model {path}: {exc}") from None


def _summary(report: BatchReport) -> str:
    backends = ", ".join(f"{name} {count}" for name, count in sorted(report.backends.items())) or "none"
    return (
        f"segmented {report.frames} frames from {report.processed}/{report.inputs} inputs in "
        f"{report.seconds:.1f} s ({report.fps:.1f} frames/s); backend: {backends}; "
        f"context losses: {report.context_losses}; failed inputs: {len(report.failures)}"
    )


def run(args: argparse.Namespace) -> int:
    inputs = find_inputs(args.inputs)
    if not inputs:
        print("gpu-seg segment: no input files found", file=sys.stderr)
        return 1
    from .console import progress_bar

    try:
        model = _model_bytes(args.model)
        with progress_bar(estimate_frames(inputs), "segment", enabled=not args.quiet) as progress:

            def advance(record: FrameRecord) -> None:
                if progress is not None:
                    progress(1, f"{record.backend} {record.ms:.0f} ms")

            with BatchSegmenter(
                model,
                args.out,
                confidence=args.confidence,
                overlay=args.overlay,
                backend=args.backend,
                num_threads=args.threads,
                on_frame=advance,
            ) as engine:
                report = engine.run(inputs)
    except GpuSegError as exc:
        print(f"gpu-seg segment: {exc}", file=sys.stderr)
        return 1
    for name, reason in report.failures:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    print(_summary(report))
    return 0 if report.ok else 1
