"""The GL data path on a real GPU: readback strategies side by side with the peers, one run.

For each preset and output mode, interleaved rounds time (medians with IQR, milliseconds):

* ``gl-direct``: gpu_seg GL, one ``glGetTexImage`` per plane into fresh numpy arrays (llvmpipe's default);
* ``gl-mapped``: gpu_seg GL, every output into one persistent mapped buffer, one fence, then a copy
  into fresh arrays (the default where ``GL_ARB_buffer_storage`` exists and the renderer is a GPU);
* ``gl-mapped-out``: the same, copied into the caller's preallocated arrays (``confidence_out=``);
* ``gl-view``: ``process_view``: the masks are read-only views of the mapped buffer (zero-copy),
  released after each frame;
* ``gl-async`` / ``gl-async-view``: frames in flight (``submit``, two queued at a time) over chains
  of ``ASYNC_CHAIN`` frames, collected as owned arrays / as views: milliseconds per frame (the
  inverse of the throughput), not the latency of one frame;
* ``cpu-fast``: gpu_seg's fast CPU path (numba, all cores);
* ``mediapipe``: MediaPipe's ``ImageSegmenter`` (CPU delegate) post-processing the same tensor;
* ``torch-cuda-h2h`` / ``torch-cuda-resident``: PyTorch CUDA, host to host through pinned buffers, and
  with the tensor and masks on the GPU (where CUDA exists).

GL rows also carry ``gpu_ms``: the median GPU time of a frame's GL work (``time_gpu=True``: one
``GL_TIME_ELAPSED`` query around upload, passes and the start of the readback).

Every gpu_seg row is checked against the numpy reference on its last frame. Prints a Markdown table
and writes everything (with the machine, GPU, driver and commit) to ``--json``.

    python benchmarks/gpu_data_path.py --json gpu-data-path.json [--presets selfie,deeplab] [--frames 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpu_seg
from gpu_seg.tools.bench.cases import MODES, PRESETS, BenchCase, model_like_tensor
from gpu_seg.tools.bench.peers import mediapipe_runner
from gpu_seg.tools.bench.runner import BackendUnavailableError

Call = Callable[[], Any]


def _summary(samples: list[float]) -> dict[str, float]:
    q = np.percentile(samples, [25, 50, 75])
    return {"median_ms": float(q[1]), "iqr_ms": float(q[2] - q[0]), "frames": len(samples)}


def _gl_call(pp: gpu_seg.SegmentationPostprocessor, tensor, size, readback: str, into: bool, mode: str):
    pp.process(tensor, size)  # build the generation's objects
    pp._supervisor.generation.pipeline.readback = readback
    conf, cat = MODES[mode]
    outs: dict[str, Any] = {}
    if into:
        width, height = size
        outs["confidence_out"] = np.empty((tensor.shape[2], height, width), np.float32) if conf else None
        outs["category_out"] = np.empty((height, width), np.uint8) if cat else None
    last: dict[str, Any] = {}

    def call() -> None:
        last["r"] = pp.process(tensor, size, **outs)

    return call, lambda: last["r"]


#: Frames per timed call of the frames-in-flight rows (two in flight at a time).
ASYNC_CHAIN = 6


def _view_call(pp: gpu_seg.SegmentationPostprocessor, tensor, size):
    pp.process(tensor, size)
    last: dict[str, Any] = {}

    def call() -> None:
        previous = last.pop("v", None)
        if previous is not None:
            previous.release()
        last["v"] = pp.process_view(tensor, size)

    return call, lambda: last["v"].to_result()


def _async_call(pp: gpu_seg.SegmentationPostprocessor, tensor, size, view: bool):
    pp.process(tensor, size)
    last: dict[str, Any] = {}

    def collect(pending) -> None:
        if view:
            result = pending.view()
            last["r"] = result.to_result() if "check" in last else None
            result.release()
        else:
            last["r"] = pending.result()

    def call() -> None:
        queued = [pp.submit(tensor, size), pp.submit(tensor, size)]
        for _ in range(ASYNC_CHAIN - 2):
            collect(queued.pop(0))
            queued.append(pp.submit(tensor, size))
        for pending in queued:
            collect(pending)

    def check():
        last["check"] = True
        call()
        return last["r"]

    return call, check


def _torch_calls(tensor: np.ndarray, size: tuple[int, int], activation: str, mode: str) -> dict[str, Call]:
    try:
        import torch
        import torch.nn.functional as functional
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    width, height = size
    conf, cat = MODES[mode]
    device = torch.device("cuda")
    pinned_in = torch.from_numpy(tensor).pin_memory()
    host_conf = (
        torch.empty((tensor.shape[2], height, width), dtype=torch.float32).pin_memory() if conf else None
    )
    host_cat = torch.empty((height, width), dtype=torch.uint8).pin_memory() if cat else None
    resident_in = pinned_in.to(device)

    def masks(nhwc):
        x = nhwc.permute(2, 0, 1).unsqueeze(0)
        out_conf = out_cat = None
        if conf:
            a = (
                torch.softmax(x, 1)
                if activation == "softmax"
                else torch.sigmoid(x)
                if activation == "sigmoid"
                else x
            )
            out_conf = functional.interpolate(a, size=(height, width), mode="bilinear", align_corners=False)[
                0
            ]
        if cat:
            up = functional.interpolate(
                x.contiguous(), size=(height, width), mode="bilinear", align_corners=True
            )
            out_cat = (
                torch.where(up[0, 0] > 0.0 if activation != "none" else up[0, 0] > 0.5, 0, 255)
                if up.shape[1] == 1
                else up[0].argmax(0)
            ).to(torch.uint8)
        return out_conf, out_cat

    def h2h() -> None:
        with torch.inference_mode():
            gpu_in = pinned_in.to(device, non_blocking=True)
            out_conf, out_cat = masks(gpu_in)
            if out_conf is not None:
                host_conf.copy_(out_conf, non_blocking=True)
            if out_cat is not None:
                host_cat.copy_(out_cat, non_blocking=True)
            torch.cuda.synchronize()

    def resident() -> None:
        with torch.inference_mode():
            masks(resident_in)
            torch.cuda.synchronize()

    return {"torch-cuda-h2h": h2h, "torch-cuda-resident": resident}


def _check(result, want) -> dict[str, float]:
    out: dict[str, float] = {}
    if want.confidence_masks is not None:
        out["max_conf_diff"] = float(np.nanmax(np.abs(result.confidence_masks - want.confidence_masks)))
    if want.category_mask is not None:
        out["category_mismatches"] = int((result.category_mask != want.category_mask).sum())
    return out


def run_case(preset_name: str, mode: str, frames: int, rounds: int) -> dict[str, Any]:
    preset = PRESETS[preset_name]
    tensor = model_like_tensor(preset.tensor_shape, np.random.default_rng(7))
    size, activation = preset.output_size, preset.activation
    conf, cat = MODES[mode]
    want = gpu_seg.reference_postprocess(tensor, activation, size, conf, cat)
    options = {"output_confidence_masks": conf, "output_category_mask": cat}
    processors = {
        name: gpu_seg.SegmentationPostprocessor(activation, backend="gl", time_gpu=True, **options)
        for name in ("gl-direct", "gl-mapped", "gl-mapped-out")
    }
    for name in ("gl-view", "gl-async", "gl-async-view"):
        processors[name] = gpu_seg.SegmentationPostprocessor(
            activation, backend="gl", readback="mapped", **options
        )
    calls: dict[str, Call] = {}
    checks: dict[str, Call] = {}
    for name, readback, into in (
        ("gl-direct", "direct", False),
        ("gl-mapped", "mapped", False),
        ("gl-mapped-out", "mapped", True),
    ):
        calls[name], checks[name] = _gl_call(processors[name], tensor, size, readback, into, mode)
    calls["gl-view"], checks["gl-view"] = _view_call(processors["gl-view"], tensor, size)
    for name, view in (("gl-async", False), ("gl-async-view", True)):
        calls[name], checks[name] = _async_call(processors[name], tensor, size, view)
    per_call = {"gl-async": ASYNC_CHAIN, "gl-async-view": ASYNC_CHAIN}
    cpu = gpu_seg.SegmentationPostprocessor(activation, backend="cpu", **options)
    gpu_seg.cpu.warm_up()
    last_cpu: dict[str, Any] = {}
    calls["cpu-fast"] = lambda: last_cpu.__setitem__("r", cpu.process(tensor, size))
    checks["cpu-fast"] = lambda: last_cpu["r"]
    mediapipe = None
    try:
        case = BenchCase(preset_name, tensor, activation, size, "model-like", 0.0, modes=(mode,))
        mediapipe = mediapipe_runner(case, mode)
        calls["mediapipe"] = mediapipe.call
    except BackendUnavailableError as exc:
        print(f"  mediapipe unavailable: {exc}", file=sys.stderr)
    calls.update(_torch_calls(tensor, size, activation, mode))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    gpu_ms: dict[str, list[float]] = {name: [] for name in processors}
    for call in calls.values():  # warm-up
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(max(1, frames // rounds)):
                started = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - started) * 1e3 / per_call.get(name, 1))
                if name in processors and processors[name].stats["last_gpu_ms"] is not None:
                    gpu_ms[name].append(processors[name].stats["last_gpu_ms"])
    rows = {name: _summary(values) for name, values in samples.items()}
    for name, check in checks.items():
        rows[name].update(_check(check(), want))
    for name in per_call:
        rows[name]["frames_per_call"] = per_call[name]
    for name, pp in processors.items():
        rows[name]["readback"] = pp._supervisor.generation.pipeline.readback
        rows[name]["gpu_ms"] = float(np.median(gpu_ms[name])) if gpu_ms[name] else None
        pp.close()
    cpu.close()
    if mediapipe is not None:
        mediapipe.close()
    bytes_out = (tensor.shape[2] * 4 if conf else 0) * size[0] * size[1] + (size[0] * size[1] if cat else 0)
    return {"preset": preset_name, "mode": mode, "bytes_out": bytes_out, "rows": rows}


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count()}
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    with gpu_seg.SegmentationPostprocessor(backend="gl") as pp:
        pp.process(np.zeros((4, 4, 1), np.float32))
        info["renderer"] = pp.context_info.renderer
        info["gl_version"] = pp.context_info.version
    info["fast_cpu"] = gpu_seg.cpu.info()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--modes", default="both,confidence,category")
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": _machine(), "cases": []}
    print(f"# {report['machine'].get('renderer')} / {report['machine'].get('cpu')}", flush=True)
    for preset in args.presets.split(","):
        for mode in args.modes.split(","):
            case = run_case(preset, mode, args.frames, args.rounds)
            report["cases"].append(case)
            names = list(case["rows"])
            print(f"\n## {preset} {mode} ({case['bytes_out'] / 1e6:.1f} MB out)")
            print("| row | median ms | IQR | check |")
            print("|---|---|---|---|")
            for name in names:
                row = case["rows"][name]
                check = {k: v for k, v in row.items() if k in ("max_conf_diff", "category_mismatches")}
                print(
                    f"| {name} | {row['median_ms']:.3f} | {row['iqr_ms']:.3f} | {check or ''} |", flush=True
                )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
