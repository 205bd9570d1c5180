"""Print what GL gpu_seg gets on this machine: renderer, version, robustness, limits, extensions."""

from __future__ import annotations

import argparse
import json
import sys

from ..tools.gl_report import describe_gl
from .args import non_negative_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--device",
        type=non_negative_int,
        default=None,
        help="EGL device index (default: $GPU_SEG_EGL_DEVICE or 0)",
    )


def run(args: argparse.Namespace) -> int:
    """Plain text (no rich needed), or the JSON object alone on stdout."""
    report = describe_gl(args.device)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if "error" not in report else 1
    if "error" in report:
        print(f"gpu-seg info: no usable GL context: {report['error']}", file=sys.stderr)
        return 1
    print(f"renderer       {report['renderer']}")
    print(f"vendor         {report['vendor']}")
    print(f"version        {report['version']} (GLSL {report['glsl_version']})")
    print(f"robust context {report['robust_context']} (reset notification: {report['reset_notification']})")
    print(f"max texture    {report['max_texture_size']}")
    print(f"EGL            {report['egl'].get('vendor', '?')} {report['egl'].get('version', '?')}")
    print(f"extensions     {len(report['extensions'])}")
    for name in report["extensions"]:
        print(f"  {name}")
    return 0
