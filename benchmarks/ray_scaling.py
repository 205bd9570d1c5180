"""Throughput of ``gpu-seg segment`` on Ray against the single-process command, on real photos.

    python benchmarks/ray_scaling.py [--photos 120] [--repeats 3] [--backend cpu] [--json PATH]

Writes a folder of real photos (scikit-image's bundled astronaut, coffee, chelsea, rocket and the
stereo motorcycle pair, resized to several widths), then in one process and one local Ray (2 CPUs,
loopback only), for each repeat and in a rotating order: the single-process engine
(``BatchSegmenter``, what ``gpu-seg segment`` runs), Ray with 1 worker, Ray with 2 workers (1 CPU
each). Reports frames/s while segmenting (single process: the run; Ray: from the first worker
ready to the end, so Ray's and the actors' start-up are left out and reported apart) and the
wall-clock time of each run, with medians over the repeats and the ratios the issue sets goals
for: 2 workers / 1 worker >= 1.5, 1 worker / single process >= 0.85.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data as skdata

from gpu_seg.distributed import segment_on_ray
from gpu_seg.distributed.session import ray_session
from gpu_seg.models import selfie_segmenter
from gpu_seg.segmenter.batch import BatchSegmenter, find_inputs

WIDTHS = (480, 640, 800)


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` real photos (6 subjects x 3 widths, repeated under new names), JPEG."""
    folder.mkdir(parents=True)
    left, right, _ = skdata.stereo_motorcycle()
    subjects = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(), "chelsea": skdata.chelsea()}
    subjects |= {"rocket": skdata.rocket(), "motorcycle_left": left, "motorcycle_right": right}
    variants = [(name, pixels, width) for width in WIDTHS for name, pixels in subjects.items()]
    written = []
    for i in range(count):
        name, pixels, width = variants[i % len(variants)]
        height = round(pixels.shape[0] * width / pixels.shape[1])
        path = folder / f"{name}_{width}_{i:04d}.jpg"
        cv2.imwrite(str(path), np.ascontiguousarray(cv2.resize(pixels, (width, height))[..., ::-1]))
        written.append(path)
    return written


def run_single(model: bytes, photos: Path, out: Path, backend: str) -> dict:
    start = time.perf_counter()
    with BatchSegmenter(model, out, backend=backend) as engine:
        report = engine.run(find_inputs([photos]))
    wall = time.perf_counter() - start
    assert report.ok
    return {"frames": report.frames, "fps": report.fps, "wall_s": wall, "startup_s": wall - report.seconds}


def run_ray(model: bytes, photos: Path, out: Path, backend: str, workers: int) -> dict:
    start = time.perf_counter()
    report = segment_on_ray([photos], out, model=model, backend=backend, workers=workers)
    wall = time.perf_counter() - start
    assert report.ok, report.failures
    per_worker = sorted(w.frames for w in report.workers.values())
    return {
        "frames": report.frames,
        "fps": report.processing_fps,
        "wall_s": wall,
        "startup_s": report.startup_seconds,
        "per_worker_frames": per_worker,
        "retries": report.retries,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=("cpu", "auto", "gl"), default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpu_seg-ray-bench-"))
    try:
        photos = root / "photos"
        write_photos(photos, args.photos)
        model = selfie_segmenter().read_bytes()
        configs = ["single", "ray-1", "ray-2"]
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        with ray_session(None, {"num_cpus": 2, "object_store_memory": 200 * 1024 * 1024}):
            for repeat in range(args.repeats):
                order = configs[repeat % 3 :] + configs[: repeat % 3]
                for name in order:
                    out = root / f"out-{name}-{repeat}"
                    load = os.getloadavg()[0]
                    if name == "single":
                        result = run_single(model, photos, out, args.backend)
                    else:
                        result = run_ray(model, photos, out, args.backend, int(name.split("-")[1]))
                    result["load_before"] = load
                    runs[name].append(result)
                    shutil.rmtree(out)
                    print(f"repeat {repeat} {name:6s} {json.dumps(result)}", file=sys.stderr, flush=True)
        medians = {
            name: {key: statistics.median(r[key] for r in results) for key in ("fps", "wall_s", "startup_s")}
            for name, results in runs.items()
        }
        ratios = {
            "ray2_over_ray1_fps": [
                b["fps"] / a["fps"] for a, b in zip(runs["ray-1"], runs["ray-2"], strict=True)
            ],
            "ray1_over_single_fps": [
                b["fps"] / a["fps"] for a, b in zip(runs["single"], runs["ray-1"], strict=True)
            ],
        }
        print(f"{args.photos} photos, backend {args.backend}, {args.repeats} repeats, {os.cpu_count()} CPUs")
        for name, m in medians.items():
            print(
                f"  {name:6s} {m['fps']:6.1f} frames/s while segmenting, {m['wall_s']:5.1f} s wall "
                f"({m['startup_s']:.1f} s start-up)"
            )
        for name, values in ratios.items():
            print(
                f"  {name}: "
                + ", ".join(f"{v:.2f}" for v in values)
                + f" (median {statistics.median(values):.2f})"
            )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "photos": args.photos,
                        "backend": args.backend,
                        "runs": runs,
                        "medians": medians,
                        "ratios": ratios,
                    },
                    indent=2,
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
