"""Segment images and videos with a real model and write the masks to files.

For each image ``NAME.ext``: ``DIR/NAME.mask.png`` (the category mask; one-class models: 0 =
foreground, 255 = background), with ``--confidence`` ``DIR/NAME.confidence.npy`` (float32
``(C, H, W)``), with ``--overlay`` ``DIR/NAME.overlay.png``. For a video ``NAME.ext`` (frames in video
mode): ``DIR/NAME/000000.mask.png``, ... ``DIR/manifest.jsonl`` gets one line per image or frame
(input, frame index, outputs, backend, ms, context losses). Folders given as inputs are searched for
images and videos. The default model is MediaPipe's selfie segmenter, fetched once from PyPI and
cached. Files are read and written with OpenCV, which only mediapipe brings (the mediapipe, bench
and test extras); else ``pip install opencv-python-headless``.

With ``--ray`` the same files are computed by a pool of Ray workers (``pip install
"gpu_seg[ray]"``): a local Ray started for the run, or the cluster at ADDRESS (write
``--ray=ADDRESS``, or put ``--ray`` after the inputs). ``--out`` may then also be a pyarrow
filesystem URI (``s3://bucket/masks``).

Progress goes to stderr; a summary (frames, fps, backend, context losses; with Ray: per-worker
counts, retries) to stdout. Exit status: 0 when every input was processed, 1 otherwise (an
unreadable input is reported and the rest run; a manifest that cannot be written stops the run),
2 for bad arguments, 130 after Ctrl-C and 143 after SIGTERM (both stop between frames, every file
written listed in the manifest; with ``--ray`` the lines of every task that came back).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GpuSegError
from ..models import model_bytes
from ..segmenter.batch import BatchReport, BatchSegmenter, FrameRecord, estimate_frames, find_inputs
from ..segmenter.files import MANIFEST, opencv
from .args import MAX_THREADS, non_negative_float, positive_int, thread_count

if TYPE_CHECKING:
    from ..distributed import RayReport

#: Options that only mean something with ``--ray`` (argparse destinations).
RAY_OPTIONS = ("workers", "cpus_per_worker", "gpus_per_worker", "frames_per_task")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the description as written
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created); with --ray also a pyarrow URI"
    )
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
        "--threads",
        type=thread_count,
        default=None,
        help=f"LiteRT threads, at most {MAX_THREADS} (default: LiteRT's; with --ray: the worker's CPUs)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_ray_arguments(parser.add_argument_group("Ray (pip install 'gpu_seg[ray]')"))


def _add_ray_arguments(group: argparse._ArgumentGroup) -> None:
    from ..distributed.plan import DEFAULT_FRAMES_PER_TASK  # no Ray import

    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray workers: a local Ray started for the run, or the cluster at ADDRESS "
        "(auto, HOST:PORT, ray://HOST:10001)",
    )
    group.add_argument(
        "--workers", type=positive_int, default=None, metavar="N", help="Ray workers (default 1)"
    )
    group.add_argument(
        "--cpus-per-worker",
        type=non_negative_float,
        default=None,
        help="CPUs Ray reserves per worker (default 1)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=non_negative_float,
        default=None,
        metavar="G",
        help="GPUs per worker (default 0); each renders on the GPU Ray assigned it; 0.5: two per GPU",
    )
    group.add_argument(
        "--frames-per-task",
        type=positive_int,
        default=None,
        metavar="F",
        help=f"video frames per task (longer videos are split; default {DEFAULT_FRAMES_PER_TASK})",
    )


def _summary(report: BatchReport) -> str:
    backends = ", ".join(f"{name} {count}" for name, count in sorted(report.backends.items())) or "none"
    return (
        f"segmented {report.frames} frames from {report.processed}/{report.inputs} inputs in "
        f"{report.seconds:.1f} s ({report.fps:.1f} frames/s); backend: {backends}; "
        f"context losses: {report.context_losses}; failed inputs: {len(report.failures)}"
    )


def _ray_summary(report: RayReport) -> str:
    workers = ", ".join(
        f"{name} {worker.frames} frames / {worker.tasks} tasks"
        + (f" (GPU {worker.gpu}, EGL device {worker.egl_device})" if worker.gpu is not None else "")
        for name, worker in sorted(report.workers.items())
    )
    return (
        f"ray: {report.tasks} tasks on {len(report.workers)} workers ({workers or 'none'}); "
        f"start-up {report.startup_seconds:.1f} s, then {report.processing_fps:.1f} frames/s; "
        f"retries: {report.retries}; worker restarts: {report.restarts}"
    )


def _check_arguments(args: argparse.Namespace) -> str | None:
    """Why the arguments do not go together or the output folder cannot be made (it is made here,
    before any frame), or None."""
    if args.ray is None:
        given = [f"--{name.replace('_', '-')}" for name in RAY_OPTIONS if getattr(args, name) is not None]
        if given:
            return f"{', '.join(given)} need --ray"
        if "://" in args.out:
            return "an output URI needs --ray (without it, --out is a local folder)"
    if args.ray:  # a cluster's address: reachable? (ray.init would retry for good)
        from ..distributed.session import address_problem

        problem = address_problem(args.ray)
        if problem:
            return f"--ray: {problem}"
    if not args.ray and "://" not in args.out:  # a folder on this machine (local Ray included)
        return _out_folder_problem(args.out)
    return None


def _out_folder_problem(out: str) -> str | None:
    """Make the output folder now, before any frame: why that fails, or None."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        return f"--out {out}: a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out}: cannot create the folder: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"--out {out}: cannot write in the folder (permission denied)"
    manifest = path / MANIFEST  # appended to by the run
    if manifest.is_dir() or (manifest.exists() and not os.access(manifest, os.W_OK)):
        return f"--out {out}: cannot append to {manifest}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check_arguments(args)
    if problem:
        print(f"gpu-seg segment: {problem}", file=sys.stderr)
        return 2
    local_out = [] if "://" in args.out else [args.out]  # a later run must not read its own masks
    inputs = find_inputs(args.inputs, output_folders=local_out)
    if not inputs:
        print("gpu-seg segment: no input files found", file=sys.stderr)
        return 1
    from .console import progress_bar

    try:
        _check_dependencies(args)  # before the progress bar: a missing package is one line
        model = model_bytes(args.model)
        with progress_bar(estimate_frames(inputs), "segment", enabled=not args.quiet) as progress:

            def advance(record: FrameRecord) -> None:
                if progress is not None:
                    progress(1, f"{record.backend} {record.ms:.0f} ms")

            report = (
                _run_on_ray(args, inputs, model, advance)
                if args.ray is not None
                else _run(args, inputs, model, advance)
            )
    except GpuSegError as exc:
        print(f"gpu-seg segment: {exc}", file=sys.stderr)
        return 1
    _print_failures(report)
    print(_summary(report))
    if args.ray is not None:
        print(_ray_summary(report))  # type: ignore[arg-type]
    return 0 if report.ok else 1


def _check_dependencies(args: argparse.Namespace) -> None:
    """OpenCV here (it reads and writes the files), or Ray (the workers check their own OpenCV)."""
    if args.ray is None:
        opencv()
    elif importlib.util.find_spec("ray") is None:
        from ..distributed.session import RayUnavailableError

        raise RayUnavailableError('running on Ray needs ray[data]: pip install "gpu_seg[ray]"')


def _print_failures(report: BatchReport) -> None:
    for name, reason in report.failures:
        print(f"failed: {name}: {reason}", file=sys.stderr)


def _run(
    args: argparse.Namespace, inputs: list[Path], model: bytes, advance: Callable[[FrameRecord], None]
) -> BatchReport:
    with BatchSegmenter(
        model,
        Path(args.out),
        confidence=args.confidence,
        overlay=args.overlay,
        backend=args.backend,
        num_threads=args.threads,
        on_frame=advance,
    ) as engine:
        try:
            return engine.run(inputs)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what was done (its lines are in the manifest)
            if engine.last_report is not None:
                _print_failures(engine.last_report)
                print(f"before the interrupt: {_summary(engine.last_report)}", file=sys.stderr)
            raise


def _run_on_ray(
    args: argparse.Namespace, inputs: list[Path], model: bytes, advance: Callable[[FrameRecord], None]
) -> RayReport:
    from ..distributed import DEFAULT_FRAMES_PER_TASK, segment_on_ray

    return segment_on_ray(
        inputs,
        args.out,
        model=model,
        confidence=args.confidence,
        overlay=args.overlay,
        backend=args.backend,
        num_threads=args.threads,
        workers=args.workers or 1,
        cpus_per_worker=1.0 if args.cpus_per_worker is None else args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker or 0.0,
        frames_per_task=args.frames_per_task or DEFAULT_FRAMES_PER_TASK,
        address=args.ray or None,
        on_frame=advance,
    )
