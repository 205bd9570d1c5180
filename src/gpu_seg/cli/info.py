"""Print what GL gpu_seg gets on this machine: renderer, version, robustness, limits, extensions."""

from __future__ import annotations

import argparse
import json

from ..gl import egl
from ..gl.session import OwnedSession


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--device", type=int, default=None, help="EGL device index (default: $GPU_SEG_EGL_DEVICE or 0)"
    )


def collect(device_index: int | None = None) -> dict:
    """Facts about the owned EGL context (or why there is none)."""
    report: dict = {"egl": egl.egl_info()}
    try:
        context = OwnedSession.create(generation=1, device_index=device_index)
    except Exception as exc:
        report["error"] = str(exc)
        return report
    try:
        info = context.info
        extensions = context.run(lambda: sorted(context.mgl.extensions))
        report.update(
            renderer=info.renderer,
            vendor=info.vendor,
            version=info.version,
            version_code=info.version_code,
            glsl_version=info.glsl_version,
            robust_context=info.robust,
            reset_notification=info.reset_notification,
            max_texture_size=info.max_texture_size,
            extensions=extensions,
        )
    finally:
        context.close()
    return report


def run(args: argparse.Namespace) -> int:
    report = collect(args.device)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if "error" not in report else 1
    if "error" in report:
        print(f"no usable GL context: {report['error']}")
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
