#!/usr/bin/env python
"""GPU-resident and CUDA paths on an NVIDIA GPU: checks, then timings against PyTorch CUDA resident.

Run on a machine with an NVIDIA GPU, PyTorch with CUDA and cuda-python (``pip install -e '.[cuda]'``)::

    PYTHONPATH=src python benchmarks/cuda_check.py --json cuda-check.json [--frames 30] [--presets ...]

Checks (each recorded as ``{"name", "ok", "detail"}`` or ``"error"``):

* ``process_cuda`` parity with ``reference_postprocess`` (the GL parity tests' tolerances: a few ulp
  with an activation, exact without; identical category) and bit-equality with ``process()``, for
  several shapes, activations and confidence formats;
* zero-copy: ``torch.as_tensor(masks.confidence_masks, device="cuda")`` aliases the result's memory;
* errors: a host tensor, a non-contiguous one, one on another CUDA device (when there are two);
* a real context loss (``gpu_seg.testing.lose_context``) during CUDA frames: recomputed on a new generation;
* ``process_resident`` with a GL-buffer input: parity with ``process()``; lifetime errors.

Timings per preset of ``gpu_seg.tools.bench.cases`` (model-like tensors) and output (both / confidence /
category), medians of ``--frames`` interleaved frames:

* ``cuda_ms``: ``process_cuda`` wall time, CUDA tensor in -> CUDA arrays out, ending with
  ``torch.cuda.synchronize()``, on a processor without ``time_gpu`` (as applications run it);
* ``torch_resident_ms``: PyTorch CUDA, tensor and masks on the GPU (the same maths as the bench peer),
  ending with ``torch.cuda.synchronize()``; ``cuda_vs_torch`` = cuda_ms / torch_resident_ms (goal <= 2);
* ``resident_ms``: ``process_resident`` GL buffer in -> textures out, then ``glFinish`` (the masks
  ready, like PyTorch's after ``synchronize()``), without ``time_gpu``;
* on another processor, with ``time_gpu=True``, after the interleaved loop: ``cuda_gl_gpu_ms`` and
  ``resident_gpu_ms``, the GPU time of the GL work of those frames (``GL_TIME_ELAPSED``), and
  ``cuda_timed_ms`` / ``resident_timed_ms``, their wall times there: the timer read waits for the GL
  work before anything else is issued (before the fifth H200 run, ``cuda_ms`` and ``resident_ms``
  were measured this way);
* ``resident_gpu_alone_ms``: the same frame's GL work measured alone, in a loop of its own: ``glFinish``
  before (nothing of this context is still running), the one ``GL_TIME_ELAPSED`` query of
  ``time_gpu`` around the frame's GL work, ``glFinish`` after; the figure for the goals (<= 0.3 ms
  multiclass both, <= 1.0 ms deeplab both); ``resident_passes``: which form of the passes the resident
  frames ran (``stats["last_resident_passes"]``: ``"compute"``, ``"fragment"`` or ``"mixed"``), and
  ``cuda_passes`` likewise for ``process_cuda``.

Every check and case runs in its own try/except: a failure is recorded in the JSON and the rest go on.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import gpu_seg  # noqa: E402
from gpu_seg import GLTensor, reference_postprocess, testing  # noqa: E402
from gpu_seg.tools.bench.cases import MODES, PRESETS, build_cases  # noqa: E402
from gpu_seg.tools.bench.torch_peers import torch_masks  # noqa: E402
from gpu_seg.types import Activation  # noqa: E402

GOALS_GPU_MS = {("multiclass", "both"): 0.3, ("deeplab", "both"): 1.0}
CUDA_VS_TORCH_GOAL = 2.0


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}


def _run_check(checks: list, name: str, function) -> None:
    started = time.perf_counter()
    try:
        detail = function()
        entry = {"name": name, "ok": True, "detail": detail}
    except Exception as exc:  # recorded, never hides the other checks
        entry = {"name": name, "ok": False, **_error(exc)}
    entry["seconds"] = round(time.perf_counter() - started, 3)
    checks.append(entry)
    print(f"{'ok  ' if entry['ok'] else 'FAIL'} {name}" + ("" if entry["ok"] else f": {entry['error']}"))


def _compare(
    got: gpu_seg.Result, tensor: np.ndarray, activation: str, size, expected=None, **options
) -> dict:
    """Parity figures; raises AssertionError past the GL parity tests' tolerances."""
    want = reference_postprocess(tensor, activation, size, **options)
    detail: dict[str, Any] = {}
    if want.confidence_masks is not None:
        if want.confidence_masks.dtype == np.float32:
            diff = float(np.nanmax(np.abs(got.confidence_masks - want.confidence_masks)))
            tol = 2e-6 if activation != "none" else 0.0
            detail["worst_confidence_diff"] = diff
            assert diff <= tol * max(1.0, float(np.nanmax(np.abs(want.confidence_masks)))), diff
    if want.category_mask is not None:
        mismatches = int(np.count_nonzero(got.category_mask != want.category_mask))
        detail["category_mismatches"] = mismatches
        assert mismatches == 0, mismatches
    if expected is not None:
        for name in ("confidence_masks", "category_mask"):
            a, b = getattr(got, name), getattr(expected, name)
            if b is not None:
                assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, a.shape, b.dtype, b.shape)
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{name} differs from process()"
        detail["bit_equal_to_process"] = True
    return detail


# ------------------------------------------------------------------------------------------ checks
def checks(torch) -> list:
    results: list = []
    rng = np.random.default_rng(0)
    shapes = [((64, 64, 1), (160, 120)), ((48, 48, 2), (96, 54)), ((32, 32, 6), (128, 72)),
              ((33, 33, 21), (120, 68)), ((17, 13, 3), (31, 29))]  # fmt: skip
    for shape, size in shapes:
        for activation in [a.value for a in Activation]:
            tensor = (rng.standard_normal(shape) * 3).astype(np.float32)

            for passes in ("compute", "fragment"):

                def parity(tensor=tensor, activation=activation, size=size, passes=passes):
                    with gpu_seg.SegmentationPostprocessor(activation, backend="gl", gl_passes=passes) as pp:
                        masks = pp.process_cuda(torch.from_numpy(tensor).cuda(), size)
                        ran = pp.stats["last_resident_passes"]
                        detail = _compare(masks.to_host(), tensor, activation, size, pp.process(tensor, size))
                        resident = pp.process_resident(tensor, size)
                        got = gpu_seg.Result(resident.read_confidence(), resident.read_category(), "gl")
                        _compare(got, tensor, activation, size, pp.process(tensor, size))
                        return {"cuda_passes": ran, "resident_passes": pp.stats["last_resident_passes"],
                                "resident_bit_equal_to_process": True, **detail}  # fmt: skip

                _run_check(results, f"cuda+resident parity {shape} -> {size} {activation} {passes}", parity)
    for dtype, channels in [("float16", None), ("uint8", None), ("float32", (4, 0)), ("uint8", (1, 1, 3))]:

        def formats(dtype=dtype, channels=channels):
            tensor = (np.random.default_rng(3).standard_normal((20, 16, 5)) * 3).astype(np.float32)
            options = {"confidence_dtype": dtype, "confidence_channels": channels}
            with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", **options) as pp:
                masks = pp.process_cuda(torch.from_numpy(tensor).cuda()[None], (37, 23))
                view = torch.as_tensor(masks.confidence_masks, device="cuda")
                assert view.data_ptr() == masks.confidence_masks.pointer, "torch.as_tensor copied"
                got = gpu_seg.Result(view.cpu().numpy(), masks.category_mask.to_host(), "gl")
                expected = pp.process(tensor, (37, 23))
                detail = _compare(got, tensor, "softmax", (37, 23), expected, **options)
                return {"zero_copy": True, **detail}

        _run_check(results, f"cuda formats {dtype} channels={channels}", formats)

    def errors():
        detail = {}
        with gpu_seg.SegmentationPostprocessor("none", backend="gl") as pp:
            for name, tensor in [
                ("host torch tensor", torch.zeros((4, 3, 2))),
                ("numpy array", np.zeros((4, 3, 2), np.float32)),
                ("non-contiguous", torch.zeros((4, 3, 2), device="cuda").permute(1, 0, 2)),
                ("float64", torch.zeros((4, 3, 2), device="cuda", dtype=torch.float64)),
            ]:
                try:
                    pp.process_cuda(tensor)
                except gpu_seg.InputError as exc:
                    assert exc.argument == "tensor"
                    detail[name] = str(exc)
                else:
                    raise AssertionError(f"{name}: no InputError")
            if torch.cuda.device_count() > 1:
                try:
                    pp.process_cuda(torch.zeros((4, 3, 2), device="cuda:1"))
                except gpu_seg.InputError as exc:
                    detail["other device"] = str(exc)
                else:
                    raise AssertionError("a tensor on cuda:1: no InputError")
            else:
                detail["other device"] = "skipped: one CUDA device"
        return detail

    _run_check(results, "cuda input errors", errors)

    def loss():
        tensor = (np.random.default_rng(5).standard_normal((16, 12, 6)) * 3).astype(np.float32)
        with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
            on_gpu = torch.from_numpy(tensor).cuda()
            pp.process_cuda(on_gpu, (40, 30))
            figures = []
            for _ in range(3):
                testing.lose_context(pp)
                masks = pp.process_cuda(on_gpu, (40, 30))
                figures.append(_compare(masks.to_host(), tensor, "softmax", (40, 30)))
            assert pp.stats["context_losses"] == 3 and masks.generation == 4, pp.stats
            return {"losses": 3, "generation": masks.generation, "parity": figures[-1]}

    _run_check(results, "cuda frame after context losses is recomputed", loss)

    def resident():
        tensor = (np.random.default_rng(6).standard_normal((33, 33, 21)) * 3).astype(np.float32)
        with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
            expected = pp.process(tensor, (120, 68))
            buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
            masks = pp.process_resident(GLTensor(buffer, tensor.shape), (120, 68))
            got = gpu_seg.Result(masks.read_confidence(), masks.read_category(), "gl")
            detail = _compare(got, tensor, "softmax", (120, 68), expected)
            pp.process(tensor, (120, 68))
            try:
                masks.read_category()
            except gpu_seg.ExpiredResultError:
                detail["expired_after_next_frame"] = True
            pp.run_gl(lambda ctx: buffer.release())
            return detail

    _run_check(results, "resident GL buffer in -> textures out", resident)
    return results


# ------------------------------------------------------------------------------------------ timings
def _median_ms(samples: list[float | None]) -> float | None:
    """Median in ms of the samples in seconds that exist (a GPU time is None where the driver's
    answer could not be the frame's, e.g. llvmpipe's first query of a context)."""
    known = [sample for sample in samples if sample is not None]
    return round(1e3 * statistics.median(known), 4) if known else None


def _gpu_seconds(pp) -> float | None:
    ms = pp.stats["last_gpu_ms"]
    return None if ms is None else ms / 1e3


def resident_alone(pp, source, size, frames: int) -> dict:
    """``resident_gpu_alone_ms`` and ``resident_passes`` (see the module docstring); ``pp`` has
    ``time_gpu=True``."""
    finish = lambda ctx: ctx.finish()  # noqa: E731
    samples = []
    for frame in range(frames + 2):
        pp.run_gl(finish)
        pp.process_resident(source, size)  # time_gpu: one query around the frame's GL work
        pp.run_gl(finish)
        if frame >= 2:
            samples.append(_gpu_seconds(pp))
    return {
        "resident_gpu_alone_ms": _median_ms(samples),
        "resident_passes": pp.stats["last_resident_passes"],
    }


def _goals(row: dict, preset: str, mode: str) -> None:
    goal = GOALS_GPU_MS.get((preset, mode))
    if goal is not None:
        row["resident_gpu_goal_ms"] = goal
        alone = row["resident_gpu_alone_ms"]
        row["resident_gpu_goal_met"] = alone is not None and alone <= goal


def time_case(torch, functional, case, mode: str, frames: int) -> dict:
    """One preset and output mode: the interleaved wall-time loop on processors *without*
    ``time_gpu`` (as an application runs them: no timer read, so nothing waits for the GL work
    before CUDA is handed it), then the GPU times on a processor of their own with ``time_gpu``."""
    conf, cat = MODES[mode]
    activation = Activation(case.activation)
    tensor, size = case.tensor, case.output_size
    on_gpu = torch.from_numpy(tensor).cuda()
    row: dict[str, Any] = {
        "preset": case.preset,
        "mode": mode,
        "shape": list(tensor.shape),
        "size": list(size),
    }
    options = {"output_confidence_masks": conf, "output_category_mask": cat}
    finish = lambda ctx: ctx.finish()  # noqa: E731
    with (
        gpu_seg.SegmentationPostprocessor(case.activation, backend="gl", **options) as cuda_pp,
        gpu_seg.SegmentationPostprocessor(case.activation, backend="gl", **options) as gl_pp,
    ):
        buffer = gl_pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
        source = GLTensor(buffer, tensor.shape)
        samples: dict[str, list[float]] = {"cuda": [], "torch": [], "resident": []}
        for frame in range(frames + 5):
            started = time.perf_counter()
            masks = cuda_pp.process_cuda(on_gpu, size)
            torch.cuda.synchronize()
            cuda_s = time.perf_counter() - started
            del masks
            started = time.perf_counter()
            planes, mask = torch_masks(torch, functional, on_gpu, activation, size, mode)
            torch.cuda.synchronize()
            torch_s = time.perf_counter() - started
            del planes, mask
            started = time.perf_counter()
            gl_pp.process_resident(source, size)
            gl_pp.run_gl(finish)  # the masks are ready, as torch's after synchronize()
            resident_s = time.perf_counter() - started
            if frame >= 5:
                samples["cuda"].append(cuda_s)
                samples["torch"].append(torch_s)
                samples["resident"].append(resident_s)
        row["cuda_passes"] = cuda_pp.stats["last_resident_passes"]
        gl_pp.run_gl(lambda ctx: buffer.release())
        row["renderer"] = cuda_pp.context_info.renderer
    row.update(
        cuda_ms=_median_ms(samples["cuda"]),
        torch_resident_ms=_median_ms(samples["torch"]),
        resident_ms=_median_ms(samples["resident"]),
    )
    row.update(timed_gpu(torch, case, options, on_gpu, frames))
    row["cuda_vs_torch"] = round(row["cuda_ms"] / row["torch_resident_ms"], 3)
    row["cuda_goal_met"] = row["cuda_vs_torch"] <= CUDA_VS_TORCH_GOAL
    _goals(row, case.preset, mode)
    return row


def timed_gpu(torch, case, options: dict, on_gpu, frames: int) -> dict:
    """GPU times of the GL work of CUDA and resident frames (``time_gpu=True``: its timer read
    waits for the frame, so the wall times of this processor, ``cuda_timed_ms`` and
    ``resident_timed_ms``, include that wait: the fourth H200 run's ``cuda_ms`` and
    ``resident_ms`` were measured this way). ``torch`` None: resident frames only."""
    tensor, size = case.tensor, case.output_size
    keys = ("cuda_gpu", "cuda_wall", "resident_gpu", "resident_wall")
    samples: dict[str, list[float]] = {key: [] for key in keys}
    with gpu_seg.SegmentationPostprocessor(case.activation, backend="gl", time_gpu=True, **options) as pp:
        buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
        source = GLTensor(buffer, tensor.shape)
        for frame in range(frames + 3):
            if torch is not None:
                started = time.perf_counter()
                masks = pp.process_cuda(on_gpu, size)
                torch.cuda.synchronize()
                samples["cuda_wall"].append(time.perf_counter() - started)
                samples["cuda_gpu"].append(_gpu_seconds(pp))
                del masks
            started = time.perf_counter()
            pp.process_resident(source, size)  # time_gpu: waits for the GL work's timer
            resident_s = time.perf_counter() - started
            if frame >= 3:
                samples["resident_gpu"].append(_gpu_seconds(pp))
                samples["resident_wall"].append(resident_s)
        row = resident_alone(pp, source, size, frames)
        pp.run_gl(lambda ctx: buffer.release())
    if torch is not None:
        row.update(
            cuda_gl_gpu_ms=_median_ms(samples["cuda_gpu"][3:]),
            cuda_timed_ms=_median_ms(samples["cuda_wall"][3:]),
        )
    row.update(
        resident_gpu_ms=_median_ms(samples["resident_gpu"]),
        resident_timed_ms=_median_ms(samples["resident_wall"]),
    )
    return row


def time_resident(case, mode: str, frames: int) -> dict:
    """``process_resident`` alone (GL buffer in, textures out): no PyTorch or CUDA needed."""
    conf, cat = MODES[mode]
    tensor, size = case.tensor, case.output_size
    row: dict[str, Any] = {
        "preset": case.preset,
        "mode": mode,
        "shape": list(tensor.shape),
        "size": list(size),
    }
    options = {"output_confidence_masks": conf, "output_category_mask": cat}
    finish = lambda ctx: ctx.finish()  # noqa: E731
    with gpu_seg.SegmentationPostprocessor(case.activation, backend="gl", **options) as pp:
        buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
        source = GLTensor(buffer, tensor.shape)
        wall = []
        for frame in range(frames + 3):
            started = time.perf_counter()
            pp.process_resident(source, size)
            pp.run_gl(finish)
            if frame >= 3:
                wall.append(time.perf_counter() - started)
        pp.run_gl(lambda ctx: buffer.release())
        row["renderer"] = pp.context_info.renderer
    row["resident_ms"] = _median_ms(wall)
    row.update(timed_gpu(None, case, options, None, frames))
    _goals(row, case.preset, mode)
    return row


def environment(torch) -> dict:
    info: dict[str, Any] = {"python": platform.python_version(), "gpu_seg": gpu_seg.__version__}
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception as exc:
        info["commit"] = f"unknown ({exc})"
    try:
        info["torch"] = torch.__version__
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_devices"] = torch.cuda.device_count()
    except Exception as exc:
        info["torch_error"] = str(exc)
    try:
        from importlib.metadata import version

        info["cuda_bindings"] = version("cuda-bindings")
    except Exception as exc:
        info["cuda_bindings"] = f"unknown ({exc})"
    try:
        with gpu_seg.SegmentationPostprocessor("none", backend="gl") as pp:
            pp.process(np.zeros((2, 2, 1), np.float32))
            context = pp.context_info
            info["gl_renderer"], info["gl_version"] = context.renderer, context.version
    except Exception as exc:
        info["gl_error"] = str(exc)
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="where to write the report")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--presets", default="selfie,hair,multiclass,deeplab")
    parser.add_argument("--modes", default="both,confidence,category")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument(
        "--resident-only", action="store_true", help="time process_resident only (no PyTorch/CUDA needed)"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    presets = [PRESETS[name] for name in args.presets.split(",") if name]
    if args.resident_only:
        rows = []
        for case in build_cases(presets, noise=False, variants=False):
            for mode in args.modes.split(","):
                try:
                    row = time_resident(case, mode, args.frames)
                except Exception as exc:  # recorded, never hides the other cases
                    row = {"preset": case.preset, "mode": mode, **_error(exc)}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "traceback"}))
        report["timings"] = rows
        args.json.write_text(json.dumps(report, indent=2))
        return 1 if any("error" in r for r in rows) else 0
    try:
        import torch
        import torch.nn.functional as functional

        assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    except Exception as exc:
        report["fatal"] = _error(exc)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"cannot run: {exc}")
        return 2
    report["environment"] = environment(torch)
    print(json.dumps(report["environment"], indent=2))
    report["checks"] = [] if args.skip_checks else checks(torch)
    args.json.write_text(json.dumps(report, indent=2))
    rows = []
    for case in build_cases(presets, noise=False, variants=False):
        for mode in args.modes.split(","):
            try:
                row = time_case(torch, functional, case, mode, args.frames)
            except Exception as exc:  # recorded, never hides the other cases
                row = {"preset": case.preset, "mode": mode, **_error(exc)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "traceback"}))
            report["timings"] = rows
            args.json.write_text(json.dumps(report, indent=2))
    failed = [c["name"] for c in report["checks"] if not c["ok"]] + [
        f"{r['preset']}/{r['mode']}" for r in rows if "error" in r
    ]
    report["failed"] = failed
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{len(failed)} failures: {failed}" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
