"""Play a video, an image or a camera through the segmenter in a window, composited on the GPU.

The picture: the background blurred (``--effect blur``), replaced (``replace``, by ``--background``
or a built-in gradient) or the person tinted (``overlay``); below it a bar of figures: frames/s,
model ms, post-processing ms, the backend of the last frame, context losses. The post-processing
runs in the window's own OpenGL context. Keys: ``L`` loses that context for real (the window is
destroyed and a new one opened; the view recovers), ``E`` the next effect, ``Q``/``Esc`` quits.
Needs the viewer extra (``pip install "gpu_seg[viewer]"``) and OpenCV, which only mediapipe brings
(the mediapipe, bench and test extras); else ``pip install opencv-python-headless``.

For tests and headless runs (Xvfb): ``--frames N`` stops after N frames, ``--screenshot PATH``
saves the window after the last of them (PNG), ``--inject-loss-at N`` loses the context before frame
N (from 0; repeatable), ``--hidden`` keeps the window off screen. A summary goes to stdout. Exit
status: 0 after a run, 1 when the viewer cannot run (no display, unreadable input) or a screenshot
asked for was not taken (the run ended before its frame: the window closed, Q/Esc, a camera that
stopped), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GpuSegError
from ..models import model_bytes
from .args import MAX_THREADS, frame_rate, non_negative_int, output_file, positive_int, thread_count

if TYPE_CHECKING:
    from ..viewer import ViewerReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the description as written
    parser.add_argument("input", nargs="?", default=None, help="a video or image file")
    parser.add_argument("--camera", type=non_negative_int, default=None, metavar="N", help="camera N instead")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="PATH",
        help="segmentation .tflite (default: selfie model)",
    )
    parser.add_argument(
        "--effect",
        choices=("blur", "replace", "overlay"),
        default="blur",
        help="blur or replace the background, or tint the person (default blur)",
    )
    parser.add_argument(
        "--background",
        type=Path,
        default=None,
        metavar="PATH",
        help="image for replace (default: a gradient)",
    )
    parser.add_argument(
        "--blur-radius",
        type=non_negative_int,
        default=12,
        metavar="R",
        help="blur taps each side (default 12)",
    )
    parser.add_argument("--frames", type=positive_int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument(
        "--screenshot",
        type=output_file,
        default=None,
        metavar="PATH",
        help="save the window after the last frame (PNG, JPEG, ...: from the suffix)",
    )
    parser.add_argument(
        "--inject-loss-at",
        type=non_negative_int,
        action="append",
        default=[],
        metavar="N",
        help="lose the window's context before frame N (from 0); repeatable",
    )
    parser.add_argument(
        "--max-fps",
        type=frame_rate,
        default=None,
        metavar="F",
        help="at most F frames/s (default: the video's rate; 0: as fast as possible)",
    )
    parser.add_argument("--hidden", action="store_true", help="do not show the window (it still renders)")
    parser.add_argument(
        "--backend",
        choices=("auto", "gl", "cpu"),
        default="auto",
        help="post-processing backend (default auto)",
    )
    parser.add_argument(
        "--threads", type=thread_count, default=None, help=f"LiteRT threads (at most {MAX_THREADS})"
    )


def _check(args: argparse.Namespace) -> str | None:
    if (args.input is None) == (args.camera is None):
        return "give an input file or --camera N (one of them)"
    if args.screenshot is not None and args.frames is None:
        return "--screenshot needs --frames N (it saves the window after frame N)"
    late = [k for k in args.inject_loss_at if args.frames is not None and k >= args.frames]
    if late:
        return f"--inject-loss-at {late[0]} is after the last frame (--frames {args.frames}; from 0)"
    if args.screenshot is not None and not _image_writer_for(args.screenshot):
        return f"--screenshot {args.screenshot}: OpenCV cannot write this kind of file (use .png or .jpg)"
    from ..viewer.compositor import MAX_BLUR_RADIUS

    if args.blur_radius > MAX_BLUR_RADIUS:
        return f"--blur-radius {args.blur_radius} is more than {MAX_BLUR_RADIUS}"
    return None


def _image_writer_for(path: str) -> bool:
    """Whether OpenCV can write an image to ``path`` (its suffix); True without OpenCV, which the
    viewer reports itself."""
    try:
        import cv2
    except ImportError:
        return True
    from ..segmenter.files import plain_suffix

    return bool(
        cv2.haveImageWriter("screenshot" + plain_suffix(path))
    )  # OpenCV crashes on names not in UTF-8


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"gpu-seg view: {problem}", file=sys.stderr)
        return 2
    from ..viewer import Viewer, ViewerOptions, open_source, read_image, save_image

    try:
        background = read_image(args.background, "background") if args.background is not None else None
        options = ViewerOptions(
            effect=args.effect,
            background=background,
            frames=args.frames,
            inject_loss_at=frozenset(args.inject_loss_at),
            max_fps=args.max_fps,
            visible=not args.hidden,
            blur_radius=args.blur_radius,
            backend=args.backend,
            num_threads=args.threads,
        )
        model = model_bytes(args.model)
        source = open_source(args.input, args.camera)

        def on_frame(viewer: Viewer, record) -> None:
            if args.screenshot is not None and record.index == args.frames - 1:
                save_image(args.screenshot, viewer.screenshot(), "screenshot")

        report = Viewer(model, source, options, on_frame=on_frame).run()
    except GpuSegError as exc:
        print(f"gpu-seg view: {exc}", file=sys.stderr)
        return 1
    return summarise(args, report)


def summarise(args: argparse.Namespace, report: ViewerReport) -> int:
    """Print the summary of a run; its exit status: 1 when a screenshot was asked for and the run
    ended (the window closed, ``Q``) before the frame it is taken after."""
    backends = ", ".join(f"{name} {count}" for name, count in sorted(report.backends.items())) or "none"
    print(
        f"viewed {report.frames} frames in {report.seconds:.1f} s ({report.fps:.1f} frames/s); "
        f"post-processing: {backends}; context losses: {report.context_losses} "
        f"(windows opened: {report.windows_opened})"
    )
    if args.screenshot is None:
        return 0
    if report.frames < args.frames:
        print(
            f"gpu-seg view: no screenshot: the run ended after {report.frames} of the {args.frames} frames",
            file=sys.stderr,
        )
        return 1
    print(f"screenshot: {args.screenshot}")
    return 0
