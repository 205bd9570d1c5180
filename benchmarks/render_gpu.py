"""Markdown tables and a two-machine chart from the JSON of a GPU run.

Reads ``benchmarks/gpu_data_path.py``'s JSON (and, when given, ``benchmarks/cuda_check.py``'s) and
prints the Markdown tables that ``benchmarks/RESULTS.md`` quotes (and, when the run has them, the
candidate defaults' rows over their baselines); with ``--plot`` also draws a chart
with one panel per machine: the GPU run and an llvmpipe ``gpu-seg bench`` JSON (model-like tensors),
each bar a backend's median relative to MediaPipe CPU on the same machine (log scale).

    python benchmarks/render_gpu.py benchmarks/gpu/data-path-h100.json \\
        [--cuda benchmarks/gpu/cuda-check-h100.json] \\
        [--plot benchmarks/results-machines.png --llvmpipe benchmarks/results-llvmpipe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: Data-path rows shown, in order, with their headers.
DATA_PATH_ROWS = {
    "gl-direct": "GL direct (0.1's readback)",
    "gl-mapped": "GL (owned arrays)",
    "gl-compute": "GL compute passes (owned arrays)",
    "gl-mapped-out": "GL into caller arrays",
    "gl-view": "GL zero-copy view",
    "gl-async": "GL in flight, ms/frame",
    "gl-async-view": "GL in flight + views, ms/frame",
    "cpu-fast": "fast CPU",
    "mediapipe": "MediaPipe CPU",
    "torch-cuda-h2h": "PyTorch CUDA host->host",
    "torch-cuda-resident": "PyTorch CUDA resident",
}
#: Ratios shown: (numerator row, denominator row, header).
RATIOS = (
    ("gl-mapped", "torch-cuda-h2h", "owned / torch h2h (goal <= 1.5)"),
    ("gl-compute", "torch-cuda-h2h", "compute owned / torch h2h"),
    ("gl-view", "torch-cuda-h2h", "view / torch h2h (goal <= 1.0)"),
    ("gl-async-view", "torch-cuda-h2h", "in flight + views / torch h2h"),
    ("gl-mapped", "mediapipe", "owned / MediaPipe (goal < 1)"),
)


#: Candidate defaults, each measured against the row it would change: (candidate, baseline).
CANDIDATES = (
    ("gl-compute-flush", "gl-compute"),
    ("gl-view-flush", "gl-view"),
    ("gl-compute-stream", "gl-compute"),
    ("gl-view-upload-direct", "gl-view"),
    ("gl-view-upload-threads", "gl-view"),
    ("gl-compute", "gl-compute-fresh"),
    ("gl-compute-owned-views", "gl-compute"),
    ("gl-compute-owned-views-read", "gl-compute-read"),
)


def _ms(rows: dict[str, Any], key: str) -> float | None:
    row = rows.get(key)
    return None if not row else row.get("median_ms")


def data_path_table(report: dict[str, Any], commit: str | None = None) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine.get('nvidia_smi') or machine.get('renderer')}, {machine.get('cpu')} "
        f"({machine.get('cpu_count')} CPUs), commit {commit or machine.get('commit')}. Medians, ms.",
        "",
    ]
    headers = ["preset", "outputs", "MB out", *DATA_PATH_ROWS.values(), *(h for _, _, h in RATIOS)]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    for case in report["cases"]:
        rows = case["rows"]
        cells = [case["preset"], case["mode"], f"{case['bytes_out'] / 1e6:.1f}"]
        for key in DATA_PATH_ROWS:
            value = _ms(rows, key)
            cells.append("-" if value is None else f"{value:.2f}")
        for top, bottom, _ in RATIOS:
            a, b = _ms(rows, top), _ms(rows, bottom)
            cells.append("-" if a is None or not b else f"{a / b:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    bad = [
        f"{case['preset']} {case['mode']} {name}: {row}"
        for case in report["cases"]
        for name, row in case["rows"].items()
        if row.get("category_mismatches") or (row.get("max_conf_diff") or 0) > 1e-5
    ]
    lines += ["", "Checks against the numpy reference: " + ("all exact" if not bad else "; ".join(bad))]
    return "\n".join(lines)


def candidates_table(report: dict[str, Any]) -> str:
    """Each candidate row's median over its baseline row's, per case (< 1: the candidate is faster),
    with both rows' IQR relative to their median (noise to weigh the ratio against)."""
    lines = ["| preset | outputs | " + " | ".join(f"{a} / {b}" for a, b in CANDIDATES) + " |"]
    lines.append("|" + "---|" * (len(CANDIDATES) + 2))
    for case in report["cases"]:
        rows = case["rows"]
        cells = [case["preset"], case["mode"]]
        for candidate, baseline in CANDIDATES:
            a, b = rows.get(candidate) or {}, rows.get(baseline) or {}
            if not a.get("median_ms") or not b.get("median_ms"):
                cells.append("-")
                continue
            noise = max(a.get("iqr_ms", 0) / a["median_ms"], b.get("iqr_ms", 0) / b["median_ms"])
            cells.append(f"{a['median_ms'] / b['median_ms']:.2f}x (IQR {noise:.0%})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cuda_table(report: dict[str, Any]) -> str:
    lines = []
    checks = report.get("checks", [])
    if checks:
        failed = [c for c in checks if not c.get("ok")]
        lines.append(f"Checks: {len(checks) - len(failed)} of {len(checks)} passed.")
        lines += [f"- FAILED {c.get('name')}: {c.get('detail') or c.get('error')}" for c in failed]
        lines.append("")
    keys = (
        "cuda_ms",
        "torch_resident_ms",
        "cuda_vs_torch",
        "cuda_timed_ms",
        "cuda_gl_gpu_ms",
        "resident_ms",
        "resident_timed_ms",
        "resident_gpu_ms",
        "resident_gpu_alone_ms",
    )
    lines.append("| preset | outputs | " + " | ".join(keys) + " |")
    lines.append("|" + "---|" * (len(keys) + 2))
    for case in report.get("timings") or report.get("cases", []):
        cells = [str(case.get("preset")), str(case.get("mode"))]
        for key in keys:
            value = case.get(key)
            cells.append(
                "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
            )
        if case.get("error"):
            cells[-1] += f" (error: {str(case['error'])[:80]})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(gpu: dict[str, Any], llvmpipe: dict[str, Any] | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("GPU: " + str(gpu["machine"].get("nvidia_smi") or gpu["machine"].get("renderer")), _gpu_bars(gpu))
    ]
    if llvmpipe is not None:
        panels.append(("llvmpipe, 2-core VM (gpu-seg bench)", _llvmpipe_bars(llvmpipe)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.2 * len(panels)), squeeze=False)
    for ax, (title, (labels, series)) in zip(axes[:, 0], panels, strict=True):
        width = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series.items()):
            xs = [i + k * width for i in range(len(labels))]
            ax.bar(xs, [v if v else 0 for v in values], width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("time / MediaPipe CPU (same machine)")
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _gpu_bars(report: dict[str, Any]) -> tuple[list[str], dict[str, list[float | None]]]:
    shown = [k for k in DATA_PATH_ROWS if k not in ("mediapipe", "gl-direct")]
    labels, series = [], {DATA_PATH_ROWS[k]: [] for k in shown}
    for case in report["cases"]:
        rows = case["rows"]
        base = _ms(rows, "mediapipe")
        labels.append(f"{case['preset']} {case['mode']}")
        for key in shown:
            value = _ms(rows, key)
            series[DATA_PATH_ROWS[key]].append(value / base if value and base else None)
    return labels, series


def _llvmpipe_bars(report: dict[str, Any]) -> tuple[list[str], dict[str, list[float | None]]]:
    keys = {"gl": "GL", "gl_view": "GL zero-copy view", "gl_async": "GL in flight", "cpu": "fast CPU"}
    keys.update({"opencv": "OpenCV", "torch": "PyTorch CPU"})
    cases: dict[tuple[str, str], dict[str, float]] = {}
    for row in report["cases"]:
        if row.get("content") != "model-like" or row.get("median_ms") is None:
            continue
        cases.setdefault((row["preset"], row["outputs"]), {})[row["backend"]] = row["median_ms"]
    labels, series = [], {name: [] for name in keys.values()}
    for (preset, mode), rows in cases.items():
        base = rows.get("mediapipe")
        if not base:
            continue
        labels.append(f"{preset} {mode}")
        for key, name in keys.items():
            value = rows.get(key)
            series[name].append(value / base if value else None)
    return labels, series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_path", help="JSON of benchmarks/gpu_data_path.py")
    parser.add_argument("--cuda", help="JSON of benchmarks/cuda_check.py")
    parser.add_argument("--plot", help="write the two-machine chart here (PNG)")
    parser.add_argument("--llvmpipe", help="a gpu-seg bench JSON from llvmpipe for the chart")
    parser.add_argument("--commit", help="the commit measured, when the JSON's is wrong (a copied tree)")
    args = parser.parse_args(argv)
    with open(args.data_path) as handle:
        gpu = json.load(handle)
    print(data_path_table(gpu, args.commit))
    if any(candidate in case["rows"] for case in gpu["cases"] for candidate, _ in CANDIDATES):
        print("\nCandidate defaults (candidate / baseline, same run):\n\n" + candidates_table(gpu))
    if args.cuda:
        with open(args.cuda) as handle:
            print("\n" + cuda_table(json.load(handle)))
    if args.plot:
        llvmpipe = None
        if args.llvmpipe:
            with open(args.llvmpipe) as handle:
                llvmpipe = json.load(handle)
        plot(gpu, llvmpipe, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
