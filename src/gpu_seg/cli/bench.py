"""Time gpu_seg against MediaPipe CPU, OpenCV and PyTorch on the same tensors, side by side.

Presets (tensor -> output size, activation), modelled on MediaPipe's segmentation models:
selfie 256x256x1 sigmoid -> 640x480, hair 512x512x2 softmax -> 1280x720, multiclass 256x256x6
softmax -> 1280x720, deeplab 257x257x21 softmax -> 1920x1080; or any --tensor/--output-size.
With no arguments every preset runs, in every output mode (both, category, confidence).

Each preset is timed on a model-like tensor (smooth class regions, mostly background; the fraction
of class-boundary texels is printed) and on i.i.d. noise logits (the worst case for
content-dependent shortcuts). Backends: gpu_seg GL (preallocated outputs, and without), gpu_seg
CPU (the numpy reference), OpenCV (cv2.resize + numpy argmax), PyTorch CPU (F.interpolate +
softmax/argmax) when installed, MediaPipe CPU (ImageSegmenter on a constant model; only
segment() is timed) when installed, plus GL variants (f16/u8/channel-subset confidence masks)
when the processor supports them.

Method: the same tensor goes to every backend. Each backend runs one untimed check frame and
--warmup frames, then up to --frames timed frames back to back (it stops early once it has 3
frames and has spent --max-seconds), after a short pause that lets the previous backend's worker
threads go idle. Reported: median and IQR, the ratio to MediaPipe CPU, bytes moved (tensor in +
masks out), the floor time of those bytes at the copy bandwidth measured in the same run
(np.copyto of a 256 MiB buffer, read + write), the agreement of each backend with MediaPipe's
semantics, the performance goals, and the environment (CPU, GL renderer, versions, git commit).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import zlib
from dataclasses import asdict
from typing import Any

import numpy as np

from .. import bench_lib as bl
from ..types import Activation
from .args import non_negative_float, non_negative_int, output_size, positive_int, tensor_shape
from .progress import Progress

DEFAULT_FRAMES = 10
DEFAULT_WARMUP = 2
DEFAULT_MAX_SECONDS = 3.0
DEFAULT_BANDWIDTH_MIB = 256
#: Output modes timed on the i.i.d.-noise tensors (content matters most for the category mask).
NOISE_MODES = ("both", "category")
#: Presets that get the GL variant rows by default.
VARIANT_PRESETS = ("multiclass", "deeplab")
PEERS = ("gl", "cpu", "opencv", "torch", "mediapipe")
#: Pause before each backend's frames: OpenMP/pthreadpool/llvmpipe workers of the previous one
#: spin for a while after their last job and would steal this backend's cores.
PAUSE_S = 0.2
#: Columns of the main table, in order.
TABLE_BACKENDS = ("gl", "gl_alloc", "cpu", "opencv", "torch", "mediapipe")
SHORT = {
    "gl": "gpu_seg GL",
    "gl_alloc": "GL no-prealloc",
    "cpu": "gpu_seg CPU",
    "opencv": "OpenCV",
    "torch": "PyTorch",
    "mediapipe": "MediaPipe",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    what = parser.add_argument_group("what to time")
    what.add_argument(
        "--preset",
        action="append",
        choices=list(bl.PRESETS),
        default=None,
        help="a preset to run (repeatable; default: all presets unless --tensor is given)",
    )
    what.add_argument("--tensor", type=tensor_shape, metavar="HxWxC", help="a custom tensor shape")
    what.add_argument(
        "--output-size",
        type=output_size,
        metavar="WxH",
        help="mask size of the custom tensor (default: its size)",
    )
    what.add_argument(
        "--activation",
        choices=[a.value for a in Activation],
        help="activation of the custom tensor (default: sigmoid for one channel, else softmax)",
    )
    what.add_argument(
        "--outputs",
        nargs="+",
        choices=list(bl.MODES),
        default=None,
        metavar="MODE",
        help="output modes: both, category, confidence (default: all three)",
    )
    what.add_argument(
        "--backends",
        nargs="+",
        choices=list(PEERS),
        default=None,
        metavar="NAME",
        help=f"backends: {', '.join(PEERS)} (default: all; unavailable ones are reported)",
    )
    what.add_argument(
        "--noise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also time i.i.d.-noise logits (worst case), outputs {'/'.join(NOISE_MODES)} (default: on)",
    )
    what.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="GL rows with f16/u8/one-channel confidence masks, when the processor supports them "
        f"(default: on for {', '.join(VARIANT_PRESETS)})",
    )
    what.add_argument(
        "--alloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the GL path without preallocated outputs (default: on, model-like tensors)",
    )
    how = parser.add_argument_group("method")
    how.add_argument(
        "--frames", type=positive_int, help=f"timed frames per backend (default {DEFAULT_FRAMES})"
    )
    how.add_argument(
        "--warmup", type=non_negative_int, help=f"untimed frames per backend first (default {DEFAULT_WARMUP})"
    )
    how.add_argument(
        "--max-seconds",
        type=non_negative_float,
        metavar="S",
        help="stop timing a backend early once it has 3 frames and spent S seconds in a cell "
        f"(default {DEFAULT_MAX_SECONDS:g}; 0 = never)",
    )
    how.add_argument("--seed", type=int, default=0, help="seed of the bench tensors (default 0)")
    how.add_argument(
        "--bandwidth-mib",
        type=positive_int,
        help=f"buffer size of the copy-bandwidth measurement (default {DEFAULT_BANDWIDTH_MIB})",
    )
    how.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 frames, 1 warm-up, 1 s per backend, no pauses, 64 MiB bandwidth buffer "
        "(unless given)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write every figure to PATH as JSON")
    out.add_argument("--plot", metavar="PATH", help="write a PNG bar chart to PATH (needs matplotlib)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(bench_parser=parser)


# ----------------------------------------------------------------------------- plan
def _case_seed(seed: int, name: str, content: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode()), zlib.crc32(content.encode())])


def build_cases(args: argparse.Namespace) -> list[bl.BenchCase]:
    """The tensors to time: one model-like (and one i.i.d.-noise) tensor per preset or custom shape."""
    specs: list[tuple[str, tuple[int, int, int], tuple[int, int], str]] = []
    presets = args.preset if args.preset else ([] if args.tensor else list(bl.PRESETS))
    for name in dict.fromkeys(presets):
        p = bl.PRESETS[name]
        specs.append((p.name, p.tensor_shape, p.output_size, p.activation))
    if args.tensor:
        h, w, c = args.tensor
        size = args.output_size or (w, h)
        activation = args.activation or ("sigmoid" if c == 1 else "softmax")
        specs.append(("custom", (h, w, c), size, activation))
    modes = tuple(args.outputs) if args.outputs else tuple(bl.MODES)
    modes = tuple(dict.fromkeys(modes))
    cases = []
    for name, shape, size, activation in specs:
        variants = args.variants if args.variants is not None else name in VARIANT_PRESETS
        tensor = bl.model_like_tensor(shape, _case_seed(args.seed, name, "model-like"))
        cases.append(
            bl.BenchCase(
                name,
                tensor,
                activation,
                size,
                "model-like",
                bl.boundary_fraction(tensor, activation),
                variants,
                modes,
            )
        )
        noise_modes = tuple(m for m in modes if m in NOISE_MODES)
        if args.noise and noise_modes:
            tensor = bl.iid_noise_tensor(shape, _case_seed(args.seed, name, "iid-noise"))
            cases.append(
                bl.BenchCase(
                    name,
                    tensor,
                    activation,
                    size,
                    "iid-noise",
                    bl.boundary_fraction(tensor, activation),
                    False,
                    noise_modes,
                )
            )
    return cases


MODES_WITH_CONFIDENCE = {mode: flags[0] for mode, flags in bl.MODES.items()}


def backends_for(case: bl.BenchCase, mode: str, peers: tuple[str, ...], alloc: bool) -> list[str]:
    """Backend keys timed for one case and mode, in table order."""
    keys: list[str] = []
    for key in peers:
        keys.append(key)
        if key == "gl" and alloc and case.content == "model-like":
            keys.append("gl_alloc")
    if "gl" in peers and case.variants and MODES_WITH_CONFIDENCE.get(mode):
        keys.extend(bl.VARIANTS)
    return keys


# ----------------------------------------------------------------------------- timing
def _row(case: bl.BenchCase, mode: str, key: str, **extra: Any) -> bl.BenchRow:
    return bl.BenchRow(
        preset=case.preset,
        tensor_shape=case.shape,
        output_size=case.output_size,
        activation=case.activation,
        content=case.content,
        boundary_fraction=case.boundary_fraction,
        outputs=mode,
        backend=key,
        label=bl.BACKENDS[key],
        **extra,
    )


def time_cell(
    case: bl.BenchCase,
    mode: str,
    keys: list[str],
    pool: bl.ProcessorPool,
    frames: int,
    warmup: int,
    max_seconds: float,
    bar: Progress | None,
    pause: float = PAUSE_S,
) -> list[bl.BenchRow]:
    """Time every backend in ``keys`` on ``case`` in output ``mode``, one after the other.

    Returns one row per key, in order; a backend that cannot run gets a row with ``unavailable``.
    """
    per_backend = warmup + frames
    rows: dict[str, bl.BenchRow] = {}
    note = f"{case.preset} {case.content} {mode}"
    min_samples = min(3, frames)
    reference: tuple[np.ndarray | None, np.ndarray | None] | None = None

    def time_backend(runner: bl.Runner, row: bl.BenchRow) -> list[float]:
        """Warm-up, then up to ``frames`` timed frames of one backend, back to back."""
        samples: list[float] = []
        done = 0
        try:
            for _ in range(warmup):
                runner()
                done += 1
                if bar is not None:
                    bar.advance(1, note)
            spent = 0.0
            for _ in range(frames):
                start = time.perf_counter()
                runner()
                elapsed = time.perf_counter() - start
                samples.append(elapsed * 1e3)
                spent += elapsed
                done += 1
                if bar is not None:
                    bar.advance(1, note)
                if max_seconds and spent > max_seconds and len(samples) >= min_samples:
                    break
        except Exception as exc:
            row.unavailable = f"failed while timing: {bl.first_line(exc)}"
        if bar is not None and done < per_backend:
            bar.advance(per_backend - done, note)
        return samples

    # One backend at a time, from its set-up to its check, so that only one backend's masks are
    # alive at once (deeplab's float32 confidence masks are 174 MB per copy).
    for key in keys:
        gc.collect()
        time.sleep(pause)  # let the previous backend's worker threads stop spinning
        try:
            runner = bl.make_runner(pool, key, case, mode)
        except bl.BackendUnavailableError as exc:
            rows[key] = _row(case, mode, key, unavailable=str(exc))
            if bar is not None:
                bar.advance(per_backend, note)
            continue
        row = rows[key] = _row(case, mode, key, note=runner.note)
        try:
            samples = time_backend(runner, row)
            if not samples or row.unavailable:
                continue
            row.samples_ms = [round(s, 4) for s in samples]
            row.samples = len(samples)
            row.median_ms, row.iqr_ms = bl.summarize(samples)
            row.bytes_moved = case.tensor.nbytes + runner.bytes_out
            if key == "cpu":
                continue
            # Agreement with MediaPipe's semantics (the gpu_seg CPU reference), from the last frame.
            try:
                if reference is None:
                    from ..reference import reference_postprocess

                    conf, cat = bl.MODES[mode]
                    result = reference_postprocess(case.tensor, case.activation, case.output_size, conf, cat)
                    reference = (result.confidence_masks, result.category_mask)
                row.vs_reference = bl.compare_to_reference(runner.outputs(), reference, case, runner.channels)
            except Exception as exc:  # a check must not lose the timings
                row.vs_reference = {"error": bl.first_line(exc)}
        finally:
            try:
                runner.close()
            except Exception:
                pass
            del runner
    gc.collect()
    return [rows[key] for key in keys]


# ----------------------------------------------------------------------------- report
def _fmt_ms(row: bl.BenchRow | None) -> str:
    if row is None:
        return "-"
    if row.unavailable or row.median_ms is None:
        return "n/a"
    median, iqr = row.median_ms, row.iqr_ms or 0.0
    digits = 2 if median < 100 else 1
    return f"{median:.{digits}f} ±{iqr:.{digits}f}"


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _lines_table(headers: list[str], body: list[list[str]], align: str) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.ljust(widths[i]) if align[i] == "l" else cell.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


def format_report(report: dict[str, Any]) -> str:
    """The human-readable report: environment, main table, GL variants, semantics, goals."""
    rows = [
        bl.BenchRow(**{**r, "tensor_shape": tuple(r["tensor_shape"]), "output_size": tuple(r["output_size"])})
        for r in report["cases"]
    ]
    meta = report["metadata"]
    settings = report["settings"]
    gl = meta.get("gl", {})
    versions = meta.get("versions", {})
    lines = [
        f"machine: {meta.get('cpu')} ({meta.get('cpus_usable')} usable CPUs, {meta.get('memory_gib')} GiB), "
        f"{meta.get('platform')}",
        f"GL: {gl.get('renderer', gl.get('error', 'n/a'))} | {gl.get('version', '')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"git: {meta.get('git', {}).get('commit')}"
        + (" (dirty)" if meta.get("git", {}).get("dirty") else ""),
        f"copy bandwidth (np.copyto, read+write): {report['copy_bandwidth_gbps']:.1f} GB/s; load average "
        f"(1/5/15 min) {meta.get('load_average')} at the start, {meta.get('load_average_end')} at the end",
        f"method: {settings['warmup']} warm-up + up to {settings['frames']} frames per backend "
        f"(at most {settings['max_seconds']:g} s each after 3), back to back, median ±IQR in ms; "
        f"seed {settings['seed']}",
        "",
    ]
    cells: dict[tuple, dict[str, bl.BenchRow]] = {}
    for row in rows:
        cells.setdefault((row.preset, row.content, row.outputs, row.tensor_shape, row.output_size), {})[
            row.backend
        ] = row
    present = [k for k in TABLE_BACKENDS if any(k in c for c in cells.values())]
    headers = [
        "preset",
        "content",
        "bnd %",
        "outputs",
        "MB",
        "floor ms",
        *(SHORT[k] for k in present),
        "GL/MP",
        "GL/floor",
    ]
    body = []
    for (preset, content, outputs, _shape, _size), cell in cells.items():
        first = next(iter(cell.values()))
        base = cell.get("gl")
        gl_ok = base is not None and base.median_ms is not None and not base.unavailable
        sized = base if gl_ok else next((r for r in cell.values() if r.bytes_moved), None)
        body.append(
            [
                preset,
                content,
                f"{100 * first.boundary_fraction:.2f}",
                outputs,
                _fmt(sized.bytes_moved / 1e6 if sized else None, ".3g"),
                _fmt(sized.floor_ms if sized else None, ".3g"),
                *(_fmt_ms(cell.get(k)) for k in present),
                _fmt(base.ratio_to_mediapipe if gl_ok else None, ".2f", "x"),
                _fmt(base.median_ms / base.floor_ms if gl_ok and base.floor_ms else None, ".1f", "x"),
            ]
        )
    lines.append(
        "Median ±IQR in ms (MB = tensor in + masks out; floor = MB at the copy bandwidth; "
        "bnd % = class-boundary texels)"
    )
    lines += _lines_table(headers, body, "llrlrr" + "r" * (len(present) + 2))

    variants = [r for r in rows if r.backend in bl.VARIANTS]
    if variants:
        lines += ["", "GL confidence variants"]
        vbody = []
        for row in variants:
            base = next((r for r in rows if r.backend == "gl" and r.same_cell(row)), None)
            if row.unavailable:
                vbody.append([row.preset, row.outputs, row.label, "n/a", "", "", "", row.unavailable[:70]])
                continue
            err = (row.vs_reference or {}).get("confidence_max_abs_error")
            vbody.append(
                [
                    row.preset,
                    row.outputs,
                    row.label,
                    _fmt_ms(row),
                    _fmt(row.bytes_moved / 1e6, ".1f"),
                    _fmt(
                        row.median_ms / base.median_ms if base and base.median_ms and row.median_ms else None,
                        ".2f",
                        "x",
                    ),
                    _fmt(row.ratio_to_mediapipe, ".2f", "x"),
                    f"max err {err:.2g}" if err is not None else row.note,
                ]
            )
        lines += _lines_table(
            ["preset", "outputs", "variant", "ms", "MB", "vs GL f32", "x MediaPipe", "note"],
            vbody,
            "lllrrrrl",
        )

    lines += ["", "Agreement with MediaPipe semantics (vs the gpu_seg CPU reference, last frame)"]
    sbody = []
    for key in ("gl", "gl_alloc", *bl.VARIANTS, "opencv", "torch", "mediapipe"):
        for content in ("model-like", "iid-noise"):
            checked = [r for r in rows if r.backend == key and r.content == content and r.vs_reference]
            if not checked:
                continue
            conf = [r.vs_reference.get("confidence_max_abs_error") for r in checked]
            conf = [c for c in conf if c is not None]
            cat = [r.vs_reference.get("category_mismatch_fraction") for r in checked]
            cat = [c for c in cat if c is not None]
            far = [r.vs_reference.get("category_far_mismatches", 0) for r in checked]
            sbody.append(
                [
                    bl.BACKENDS[key],
                    content,
                    f"{max(conf):.2g}" if conf else "-",
                    f"{100 * max(cat):.3f} %" if cat else "-",
                    str(max(far)) if cat else "-",
                ]
            )
    lines += _lines_table(
        ["backend", "content", "worst conf |diff|", "category pixels differing", "of which away from ties"],
        sbody,
        "llrrr",
    )

    lines += ["", "Goals"]
    for goal in report["goals"]:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[goal["passed"]]
        lines.append(f"  {mark}  {goal['name']}: {goal['detail']}")
    reasons = sorted({f"{r.label}: {r.unavailable}" for r in rows if r.unavailable})
    if reasons:
        lines += ["", "Not timed"]
        lines += [f"  {reason}" for reason in reasons[:20]]
    lines.append("")
    lines.append(f"wall time {report['wall_s']:.0f} s")
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: str) -> None:
    """A PNG bar chart: one panel per preset and content, bars per backend, log-scale ms.

    Bars are medians; the error bars span the interquartile range of the samples.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["cases"] if r.get("median_ms") and not r.get("unavailable")]
    panels: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        panels.setdefault((row["preset"], row["content"]), []).append(row)
    keys = [k for k in bl.BACKENDS if any(r["backend"] == k for r in rows)]
    n = max(1, len(panels))
    cols = 2 if n > 1 else 1
    nrows = (n + cols - 1) // cols
    legend_in = 0.8
    height_in = 3.6 * nrows + legend_in
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, height_in), squeeze=False)
    colors = plt.get_cmap("tab10")
    for index, ((preset, content), prow) in enumerate(panels.items()):
        ax = axes[index // cols][index % cols]
        modes = [m for m in bl.MODES if any(r["outputs"] == m for r in prow)]
        width = 0.8 / max(1, len(keys))
        for k, key in enumerate(keys):
            xs, ys, low, high = [], [], [], []
            for m, mode in enumerate(modes):
                row = next((r for r in prow if r["backend"] == key and r["outputs"] == mode), None)
                if row is not None:
                    q1, q3 = np.percentile(row.get("samples_ms") or [row["median_ms"]], [25, 75])
                    xs.append(m + (k - (len(keys) - 1) / 2) * width)
                    ys.append(row["median_ms"])
                    low.append(max(0.0, row["median_ms"] - q1))
                    high.append(max(0.0, q3 - row["median_ms"]))
            if xs:
                ax.bar(xs, ys, width, yerr=[low, high], label=bl.BACKENDS[key], color=colors(k % 10))
        ax.set_xticks(range(len(modes)), modes)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median, log)")
        h, w, c = prow[0]["tensor_shape"]
        ow, oh = prow[0]["output_size"]
        ax.set_title(f"{preset} {h}x{w}x{c} -> {ow}x{oh}, {content}", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    for index in range(len(panels), nrows * cols):
        axes[index // cols][index % cols].axis("off")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(5, len(legend)), fontsize=8)
    renderer = report["metadata"].get("gl", {}).get("renderer", "no GL")
    fig.suptitle(f"gpu-seg bench: {report['metadata'].get('cpu')} / {renderer}", fontsize=11)
    fig.tight_layout(rect=(0, legend_in / height_in, 1, 1 - 0.35 / height_in))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- command
def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser | None = getattr(args, "bench_parser", None)

    def usage_error(message: str) -> int:
        if parser is not None:
            parser.error(message)  # exits with status 2
        print(f"gpu-seg bench: error: {message}", file=sys.stderr)
        return 2

    if args.tensor is None and (args.output_size is not None or args.activation is not None):
        return usage_error("--output-size and --activation describe a custom tensor: give --tensor HxWxC too")
    if args.plot and not _matplotlib_available():
        return usage_error(f"--plot needs matplotlib, which is not installed: {bl.INSTALL_BENCH}")
    frames = args.frames or (3 if args.quick else DEFAULT_FRAMES)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else DEFAULT_WARMUP)
    max_seconds = (
        args.max_seconds if args.max_seconds is not None else (1.0 if args.quick else DEFAULT_MAX_SECONDS)
    )
    mib = args.bandwidth_mib or (64 if args.quick else DEFAULT_BANDWIDTH_MIB)
    peers = tuple(dict.fromkeys(args.backends)) if args.backends else PEERS
    pause = 0.0 if args.quick else PAUSE_S

    started = time.perf_counter()
    from . import info

    gl_info = info.collect() if "gl" in peers else {"error": "not requested"}
    metadata = bl.environment(gl_info)
    bandwidth = bl.measure_copy_bandwidth(mib)
    cases = build_cases(args)
    plan = [
        (case, mode, backends_for(case, mode, peers, args.alloc)) for case in cases for mode in case.modes
    ]
    if not args.quiet:
        renderer = gl_info.get("renderer", gl_info.get("error"))
        print(f"copy bandwidth {bandwidth['gbps']:.1f} GB/s; GL: {renderer}", file=sys.stderr)
        for case in cases:
            print(f"tensor {case.title()}", file=sys.stderr)
    total = sum(len(keys) for _, _, keys in plan) * (warmup + frames)
    bar = None if args.quiet else Progress(total, "bench")
    pool = bl.ProcessorPool()
    rows: list[bl.BenchRow] = []
    try:
        for case, mode, keys in plan:
            rows += time_cell(case, mode, keys, pool, frames, warmup, max_seconds, bar, pause)
            pool.close()  # each processor's textures are sized for this cell: free them now
    finally:
        pool.close()
        if bar is not None:
            bar.finish()
    bl.finish_rows(rows, bandwidth["gbps"])
    metadata["load_average_end"] = bl.load_average()
    report = {
        "metadata": metadata,
        "copy_bandwidth_gbps": bandwidth["gbps"],
        "copy_bandwidth": bandwidth,
        "settings": {
            "frames": frames,
            "warmup": warmup,
            "max_seconds": max_seconds,
            "pause_s": pause,
            "seed": args.seed,
            "backends": list(peers),
            "noise_modes": list(NOISE_MODES) if args.noise else [],
        },
        "tensors": [
            {
                "preset": c.preset,
                "tensor_shape": list(c.shape),
                "output_size": list(c.output_size),
                "activation": c.activation,
                "content": c.content,
                "boundary_fraction": c.boundary_fraction,
            }
            for c in cases
        ],
        "cases": [asdict(r) for r in rows],
        "goals": bl.evaluate_goals(rows),
        "wall_s": time.perf_counter() - started,
    }
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1, default=_json_default)
            out.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
