"""The GL data path on a real GPU: readback strategies side by side with the peers, one run.

For each preset and output mode, interleaved rounds time (medians with IQR, milliseconds):

* ``gl-direct``: gpu_seg GL, one ``glGetTexImage`` per plane into fresh numpy arrays (llvmpipe's default);
* ``gl-mapped``: gpu_seg GL, every output into one persistent mapped buffer, one fence, then a copy
  into fresh arrays (the default where ``GL_ARB_buffer_storage`` exists and the renderer is a GPU),
  with the fragment passes (``gl_passes="fragment"``);
* ``gl-compute``: the same with the compute passes (``gl_passes="compute"``, :mod:`gpu_seg.gl.compute`);
* ``gl-mapped-out``: the same, copied into the caller's preallocated arrays (``confidence_out=``);
* ``gl-compute-fresh``: ``gl-compute`` with ``recycle_bytes=0``: every result a fresh ``np.empty``
  (the other owned rows reuse the memory of dropped results, :mod:`gpu_seg.recycled`);
* ``gl-view``: ``process_view``: the masks are read-only views of the mapped buffer (zero-copy),
  released after each frame;
* ``gl-compute-flush`` / ``gl-view-flush``: ``gl-compute`` / ``gl-view`` with the pipeline's
  ``early_flush`` (``glFlush`` after the upload and after the category pass: the GPU starts while
  the host still issues the frame), a candidate default measured side by side;
* ``gl-compute-stream``: ``gl-compute`` with the pipeline's ``stream_collect`` (fresh arrays filled
  part by part as the GPU delivers them, a fence every few MB), another candidate;
* ``gl-compute-owned-views``: ``gl-compute`` with the pipeline's ``owned_views`` (owned results as
  writeable views of their readback buffer, held until dropped; no copy), another candidate;
  ``gl-compute-read`` / ``gl-compute-owned-views-read``: both, then every byte of the masks read
  once (a consumer: where the masks live, fresh memory or the mapped buffer, is part of the time);
* ``gl-view-upload-direct`` / ``gl-view-upload-threads``: ``gl-view`` with the tensor uploaded by
  ``glTexSubImage2D`` from the array (``upload = "direct"``) / copied into the mapped upload buffer
  over a few threads (``parallel_upload``): the upload's host copy is 0.06-0.8 ms on the H200;
* ``gl-async`` / ``gl-async-view``: frames in flight (``submit``, two queued at a time) over chains
  of ``ASYNC_CHAIN`` frames, collected as owned arrays / as views: milliseconds per frame (the
  inverse of the throughput), not the latency of one frame;
* ``cpu-fast``: gpu_seg's fast CPU path (numba, all cores);
* ``mediapipe``: MediaPipe's ``ImageSegmenter`` (CPU delegate) post-processing the same tensor;
* ``torch-cuda-h2h`` / ``torch-cuda-resident``: PyTorch CUDA, host to host through pinned buffers, and
  with the tensor and masks on the GPU (where CUDA exists).

GL rows also carry ``gpu_ms``: the median GPU time of a frame's GL work (``time_gpu=True``: one
``GL_TIME_ELAPSED`` query around upload, passes and the start of the readback), and ``gl_passes``:
the passes they ran (the other GL rows use ``gl_passes="auto"``: compute on a GPU with GL 4.3).

A row that fails (to set up, or in any frame) is reported with its ``error`` and left out of the
following rounds; the other rows and cases go on.

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


def _settings(pp: gpu_seg.SegmentationPostprocessor, settings: dict[str, Any]) -> None:
    """Set pipeline attributes (the readback, the candidate defaults ``early_flush``,
    ``stream_collect``, ``parallel_upload``, ``owned_views``, the upload) on the processor's current
    pipeline: before every frame, so that a rebuilt generation measures the same thing."""
    pipeline = pp._supervisor.generation.pipeline
    for name, value in settings.items():
        if getattr(pipeline, name) != value:
            setattr(pipeline, name, value)


def _gl_call(
    pp: gpu_seg.SegmentationPostprocessor,
    tensor,
    size,
    into: bool,
    mode: str,
    settings: dict[str, Any],
    read: bool = False,
):
    """A frame of ``process()`` (``into``: into preallocated arrays; ``read``: then every byte of
    the masks is read once, as a consumer would, so that where they live is part of the time)."""
    pp.process(tensor, size)  # build the generation's objects
    _settings(pp, settings)
    conf, cat = MODES[mode]
    outs: dict[str, Any] = {}
    if into:
        width, height = size
        outs["confidence_out"] = np.empty((tensor.shape[2], height, width), np.float32) if conf else None
        outs["category_out"] = np.empty((height, width), np.uint8) if cat else None
    last: dict[str, Any] = {}

    def call() -> None:
        _settings(pp, settings)
        result = last["r"] = pp.process(tensor, size, **outs)
        if read:
            for array in (result.confidence_masks, result.category_mask):
                if array is not None:
                    np.bitwise_or.reduce(array.reshape(-1).view(np.uint8))

    return call, lambda: last["r"]


#: Frames per timed call of the frames-in-flight rows (two in flight at a time).
ASYNC_CHAIN = 6


def _view_call(pp: gpu_seg.SegmentationPostprocessor, tensor, size, settings: dict[str, Any] | None = None):
    pp.process(tensor, size)
    settings = settings or {}
    _settings(pp, settings)
    last: dict[str, Any] = {}

    def call() -> None:
        previous = last.pop("v", None)
        if previous is not None:
            previous.release()
        _settings(pp, settings)
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
    processors: dict[str, gpu_seg.SegmentationPostprocessor] = {}
    calls: dict[str, Call] = {}
    checks: dict[str, Call] = {}
    errors: dict[str, str] = {}

    def gl_row(name: str, make: Callable[[gpu_seg.SegmentationPostprocessor], tuple[Call, Call]], **extra):
        try:
            processors[name] = gpu_seg.SegmentationPostprocessor(activation, backend="gl", **options, **extra)
            calls[name], checks[name] = make(processors[name])
        except Exception as exc:  # one row's failure must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            calls.pop(name, None)
            print(f"  {name} failed to start: {errors[name]}", file=sys.stderr)

    owned_views = {"readback": "mapped", "owned_views": True}
    for name, into, passes, settings in (
        ("gl-direct", False, "auto", {"readback": "direct"}),
        ("gl-mapped", False, "fragment", {"readback": "mapped"}),
        ("gl-compute", False, "compute", {"readback": "mapped"}),
        ("gl-compute-flush", False, "compute", {"readback": "mapped", "early_flush": True}),
        ("gl-compute-stream", False, "compute", {"readback": "mapped", "stream_collect": True}),
        ("gl-compute-owned-views", False, "compute", dict(owned_views)),
        ("gl-compute-read", False, "compute", {"readback": "mapped", "read": True}),
        ("gl-compute-owned-views-read", False, "compute", {**owned_views, "read": True}),
        ("gl-mapped-out", True, "auto", {"readback": "mapped"}),
    ):
        read = settings.pop("read", False)
        gl_row(
            name,
            lambda pp, i=into, t=settings, r=read: _gl_call(pp, tensor, size, i, mode, t, r),
            time_gpu=True,
            gl_passes=passes,
        )
    gl_row(
        "gl-compute-fresh",
        lambda pp: _gl_call(pp, tensor, size, False, mode, {"readback": "mapped"}),
        time_gpu=True,
        gl_passes="compute",
        recycle_bytes=0,
    )
    for name, settings in (
        ("gl-view", {}),
        ("gl-view-flush", {"early_flush": True}),
        ("gl-view-upload-direct", {"upload": "direct"}),
        ("gl-view-upload-threads", {"parallel_upload": True}),
    ):
        gl_row(name, lambda pp, t=settings: _view_call(pp, tensor, size, t), readback="mapped")
    for name, view in (("gl-async", False), ("gl-async-view", True)):
        gl_row(name, lambda pp, v=view: _async_call(pp, tensor, size, v), readback="mapped")
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
    try:
        calls.update(_torch_calls(tensor, size, activation, mode))
    except Exception as exc:  # a broken torch install must not hide the GL rows
        errors["torch"] = f"{type(exc).__name__}: {exc}"
    samples: dict[str, list[float]] = {name: [] for name in calls}
    gpu_ms: dict[str, list[float]] = {name: [] for name in processors}

    def attempt(name: str, call: Call) -> bool:
        try:
            call()
            return True
        except Exception as exc:  # one row's failure must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"  {name} failed: {errors[name]}", file=sys.stderr)
            return False

    for name, call in list(calls.items()):  # warm-up
        if not attempt(name, call):
            del calls[name]
    for _ in range(rounds):
        for name, call in list(calls.items()):
            for _ in range(max(1, frames // rounds)):
                started = time.perf_counter()
                if not attempt(name, call):
                    del calls[name]
                    break
                samples[name].append((time.perf_counter() - started) * 1e3 / per_call.get(name, 1))
                if name in processors and processors[name].stats["last_gpu_ms"] is not None:
                    gpu_ms[name].append(processors[name].stats["last_gpu_ms"])
    rows: dict[str, dict[str, Any]] = {name: _summary(values) for name, values in samples.items() if values}
    for name, error in errors.items():
        rows.setdefault(name, {})["error"] = error
    for name, check in checks.items():
        if name in calls:
            try:
                rows[name].update(_check(check(), want))
            except Exception as exc:
                rows[name]["error"] = f"check: {type(exc).__name__}: {exc}"
    for name in per_call:
        if name in rows:
            rows[name]["frames_per_call"] = per_call[name]
    for name, pp in processors.items():
        row = rows.setdefault(name, {})
        generation = pp._supervisor.generation if pp._supervisor else None
        if generation is not None:
            row["readback"] = generation.pipeline.readback
            row["gl_passes"] = generation.pipeline.passes
        row["gpu_ms"] = float(np.median(gpu_ms[name])) if gpu_ms.get(name) else None
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


_CHECK_KEYS = ("max_conf_diff", "category_mismatches", "error")


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
            try:
                case = run_case(preset, mode, args.frames, args.rounds)
            except Exception as exc:  # one case's failure must not hide the others
                print(f"\n## {preset} {mode}: failed: {type(exc).__name__}: {exc}", flush=True)
                report["cases"].append(
                    {"preset": preset, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
                )
                continue
            report["cases"].append(case)
            names = list(case["rows"])
            print(f"\n## {preset} {mode} ({case['bytes_out'] / 1e6:.1f} MB out)")
            print("| row | median ms | IQR | GPU ms | passes | check |")
            print("|---|---|---|---|---|---|")
            for name in names:
                row = case["rows"][name]
                check = {
                    k: v for k, v in row.items() if k in ("max_conf_diff", "category_mismatches", "error")
                }
                median = f"{row['median_ms']:.3f}" if "median_ms" in row else "-"
                iqr = f"{row['iqr_ms']:.3f}" if "iqr_ms" in row else "-"
                gpu = f"{row['gpu_ms']:.3f}" if row.get("gpu_ms") is not None else ""
                print(
                    f"| {name} | {median} | {iqr} | {gpu} | {row.get('gl_passes', '')} | {check or ''} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
