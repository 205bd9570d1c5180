"""``process()`` with every default, each preset and output mode: medians in ms, as JSON.

For no-regression checks between two trees: run it alternately under each tree, in fresh processes
(each process starts cold, as an application does: the speed choice, the CPU kernels' warm-up and
the recycled memory all start from nothing), and compare the medians of the rounds::

    for round in 1 2 3; do
        PYTHONPATH=/path/to/base/src python benchmarks/defaults_timing.py > base-$round.json
        PYTHONPATH=src python benchmarks/defaults_timing.py > head-$round.json
    done

The previous result is held during each call, as a video loop ``result = pp.process(...)`` holds it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import gpu_seg
from gpu_seg.tools.bench.cases import MODES, PRESETS, model_like_tensor


def measure(preset: str, mode: str, frames: int, warmup: int) -> dict:
    case = PRESETS[preset]
    tensor = model_like_tensor(case.tensor_shape, np.random.default_rng(7))
    confidence, category = MODES[mode]
    with gpu_seg.SegmentationPostprocessor(case.activation, confidence, category) as pp:
        held = None
        for _ in range(warmup):
            held = pp.process(tensor, case.output_size)
        samples = []
        for _ in range(frames):
            start = time.perf_counter()
            held = pp.process(tensor, case.output_size)
            samples.append((time.perf_counter() - start) * 1e3)
        backend = held.backend
    return {"median_ms": statistics.median(samples), "backend": backend}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="selfie,hair,multiclass,deeplab")
    parser.add_argument("--modes", default="both,confidence,category")
    parser.add_argument("--frames", type=int, default=25, help="timed frames (deeplab: a third)")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    results = {}
    for preset in args.presets.split(","):
        frames = max(3, args.frames // 3) if preset == "deeplab" else args.frames
        for mode in args.modes.split(","):
            results[f"{preset}/{mode}"] = measure(preset, mode, frames, args.warmup)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
