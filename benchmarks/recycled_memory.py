"""Owned results into recycled memory against fresh arrays (``recycle_bytes=0``), side by side.

Two processors per preset, output mode and backend, one with the default ``recycle_bytes`` (results
reuse the memory of dropped results, :mod:`gpu_seg.recycled`) and one with ``recycle_bytes=0``
(every result a fresh ``np.empty``), timed in alternating order in one process. The previous
result is held during each call, as a video loop ``result = pp.process(...)`` holds it. Prints one
line per case (medians and IQR, ms) and writes them to ``--json``.

    python benchmarks/recycled_memory.py --presets deeplab,multiclass,hair --backends cpu,gl --frames 16
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np

import gpu_seg
from gpu_seg.tools.bench.cases import MODES, PRESETS, model_like_tensor


def _summary(samples: list[float]) -> dict[str, float]:
    q = np.percentile(samples, [25, 50, 75])
    return {"median_ms": float(q[1]), "iqr_ms": float(q[2] - q[0])}


def measure(preset: str, mode: str, backend: str, frames: int) -> dict:
    case = PRESETS[preset]
    tensor = model_like_tensor(case.tensor_shape, np.random.default_rng(7))
    conf, cat = MODES[mode]
    options: dict = {"backend": backend}
    if backend != "cpu":
        options["software_renderer"] = "gl"  # GL even on llvmpipe
    processors = {
        "recycled": gpu_seg.SegmentationPostprocessor(case.activation, conf, cat, **options),
        "fresh": gpu_seg.SegmentationPostprocessor(case.activation, conf, cat, recycle_bytes=0, **options),
    }
    held: dict = {}
    samples: dict[str, list[float]] = {name: [] for name in processors}
    try:
        for name, pp in processors.items():
            for _ in range(3):
                held[name] = pp.process(tensor, case.output_size)
        order = list(processors)
        for frame in range(frames):
            for name in order if frame % 2 else order[::-1]:
                start = time.perf_counter()
                held[name] = processors[name].process(tensor, case.output_size)
                samples[name].append((time.perf_counter() - start) * 1e3)
        reused = processors["recycled"].stats["recycled_arrays"]
    finally:
        for pp in processors.values():
            pp.close()
    out = {"preset": preset, "mode": mode, "backend": backend, "frames": frames, "reused": reused}
    for name, values in samples.items():
        out[name] = _summary(values)
    out["ratio"] = out["recycled"]["median_ms"] / out["fresh"]["median_ms"]
    return out


def _machine() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {"python": platform.python_version(), "cpu": platform.processor(), "commit": commit or None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="deeplab,multiclass,hair")
    parser.add_argument("--modes", default="both,confidence")
    parser.add_argument("--backends", default="cpu,gl")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = []
    for backend in args.backends.split(","):
        for preset in args.presets.split(","):
            for mode in args.modes.split(","):
                row = measure(preset, mode, backend, args.frames)
                results.append(row)
                print(
                    f"{backend:4s} {preset:10s} {mode:10s} recycled {row['recycled']['median_ms']:8.2f} "
                    f"(IQR {row['recycled']['iqr_ms']:.2f})  fresh {row['fresh']['median_ms']:8.2f} "
                    f"(IQR {row['fresh']['iqr_ms']:.2f})  recycled/fresh {row['ratio']:.2f}x",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": _machine(), "cases": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
