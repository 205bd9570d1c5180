"""The report of ``gpu-seg bench`` in a terminal: environment, main table, GL variants, end to end,
agreement with MediaPipe's semantics, goals (drawn with rich; see :mod:`.console`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..tools.bench.end_to_end import E2E_MEDIAPIPE_PEER, E2E_PRESET
from ..tools.bench.results import BenchRow
from ..tools.bench.runner import BACKENDS, VARIANTS
from ..tools.bench.torch_peers import CUDA_BACKENDS
from .console import BAD, GOOD, MUTED, Text, row, table

__all__ = ["print_report"]

#: Columns of the main table, in order, with their short headers.
TABLE_BACKENDS = {
    "gl": "gpu_seg GL",
    "gl_alloc": "GL no-prealloc",
    "gl_view": "GL view",
    "gl_async": "GL in flight",
    "cpu": "gpu_seg CPU",
    "reference": "reference",
    "opencv": "OpenCV",
    "torch": "PyTorch",
    "torch_cuda": "PyTorch CUDA",
    "torch_cuda_resident": "CUDA resident",
    "mediapipe": "MediaPipe",
}


def _fmt_ms(row: BenchRow | None) -> str:
    if row is None:
        return "-"
    if not row.timed:
        return "n/a"
    median, iqr = row.median_ms, row.iqr_ms or 0.0
    digits = 2 if median < 100 else 1
    return f"{median:.{digits}f} ±{iqr:.{digits}f}"


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The human-readable report: environment, main table, GL variants, semantics, goals."""
    every_row = [BenchRow.from_dict(r) for r in report["cases"]]
    rows = [r for r in every_row if r.preset != E2E_PRESET]
    end_to_end = [r for r in every_row if r.preset == E2E_PRESET]
    for line in _preamble(report):
        console.print(line)
    if rows:
        console.print()
        console.print(
            "Median ±IQR in ms (MB = tensor in + masks out; floor = MB at the copy bandwidth; "
            "bnd % = class-boundary texels)"
        )
        console.print(_main_table(rows))
    variants = [r for r in rows if r.backend in VARIANTS]
    if variants:
        console.print("\nGL confidence variants")
        console.print(_variants_table(rows, variants))
    if end_to_end:
        console.print("\nEnd to end: selfie model on a 640x480 photo, both masks (image -> masks)")
        console.print(_end_to_end_table(end_to_end))
    console.print("\nAgreement with MediaPipe semantics (vs the gpu_seg CPU reference, last frame)")
    console.print(_agreement_table(every_row))
    console.print("\nGoals")
    console.print(_goals_table(report["goals"]))
    reasons = sorted({f"{r.label}: {r.unavailable}" for r in every_row if r.unavailable})
    if reasons:
        console.print("\nNot timed")
        for reason in reasons[:20]:
            console.print(f"  {reason}")
    console.print(f"\nwall time {report['wall_s']:.0f} s")
    if report.get("interrupted"):
        console.print(Text(f"INTERRUPTED after {len(report['cases'])} rows (figures so far)", BAD))


def _preamble(report: dict[str, Any]) -> list[str]:
    meta, settings = report["metadata"], report["settings"]
    gl, git = meta.get("gl", {}), meta.get("git", {})
    return [
        f"machine: {meta.get('cpu')} ({meta.get('cpus_usable')} usable CPUs, {meta.get('memory_gib')} GiB), "
        f"{meta.get('platform')}",
        f"GL: {gl.get('renderer', gl.get('error', 'n/a'))} | {gl.get('version', '')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v),
        _cuda_line(meta.get("cuda")),
        f"git: {git.get('commit')}" + (" (dirty)" if git.get("dirty") else ""),
        f"copy bandwidth (np.copyto, read+write): {report['copy_bandwidth_gbps']:.1f} GB/s; load average "
        f"(1/5/15 min) {meta.get('load_average')} at the start, {meta.get('load_average_end')} at the end",
        f"method: {settings['warmup']} warm-up + up to {settings['frames']} frames per backend "
        f"(at most {settings['max_seconds']:g} s each after 3), back to back, median ±IQR in ms; "
        f"seed {settings['seed']}",
    ]


def _cuda_line(cuda: dict[str, Any] | None) -> str:
    if not cuda:
        return "CUDA: not checked"
    if cuda.get("available"):
        return f"CUDA: {cuda.get('device')} (CUDA {cuda.get('cuda')}, torch {cuda.get('torch')})"
    return f"CUDA: no PyTorch CUDA rows: {cuda.get('reason')}"


def _main_table(rows: list[BenchRow]) -> Table:
    cells: dict[tuple, dict[str, BenchRow]] = {}
    for r in rows:
        cells.setdefault((r.preset, r.content, r.outputs, r.tensor_shape, r.output_size), {})[r.backend] = r
    present = [k for k in TABLE_BACKENDS if any(k in c for c in cells.values())]
    headers = ["preset", "content", "bnd %", "outputs", "MB", "floor ms"]
    headers += [TABLE_BACKENDS[k] for k in present] + ["GL/MP", "GL/floor"]
    grid = table(headers, "llrlrr" + "r" * (len(present) + 2))
    for (preset, content, outputs, _shape, _size), cell in cells.items():
        first = next(iter(cell.values()))
        base = cell.get("gl")
        gl_ok = base is not None and base.timed
        sized = base if gl_ok else next((r for r in cell.values() if r.bytes_moved), None)
        row(
            grid,
            preset,
            content,
            f"{100 * first.boundary_fraction:.2f}",
            outputs,
            _fmt(sized.bytes_moved / 1e6 if sized else None, ".3g"),
            _fmt(sized.floor_ms if sized else None, ".3g"),
            *(_fmt_ms(cell.get(k)) for k in present),
            _fmt(base.ratio_to_mediapipe if gl_ok else None, ".2f", "x"),
            _fmt(base.median_ms / base.floor_ms if gl_ok and base.floor_ms else None, ".1f", "x"),
        )
    return grid


def _variants_table(rows: list[BenchRow], variants: list[BenchRow]) -> Table:
    grid = table(["preset", "outputs", "variant", "ms", "MB", "vs GL f32", "x MediaPipe", "note"], "lllrrrrl")
    for r in variants:
        if r.unavailable:
            row(grid, r.preset, r.outputs, r.label, "n/a", "", "", "", r.unavailable[:70])
            continue
        base = next((b for b in rows if b.backend == "gl" and b.same_cell(r) and b.timed), None)
        err = (r.vs_reference or {}).get("confidence_max_abs_error")
        row(
            grid,
            r.preset,
            r.outputs,
            r.label,
            _fmt_ms(r),
            _fmt(r.bytes_moved / 1e6, ".1f"),
            _fmt(r.median_ms / base.median_ms if base and r.median_ms else None, ".2f", "x"),
            _fmt(r.ratio_to_mediapipe, ".2f", "x"),
            f"max err {err:.2g}" if err is not None else r.note,
        )
    return grid


def _end_to_end_table(rows: list[BenchRow]) -> Table:
    headers = ["backend", "ms", "frames/s", "x MediaPipe", "category agreement", "mean conf |diff|", "note"]
    grid = table(headers, "lrrrrrl")
    for r in rows:
        if not r.timed:
            row(grid, r.label, "n/a", "", "", "", "", (r.unavailable or "")[:90])
            continue
        check = r.vs_reference or {}
        agree = check.get("category_mismatch_fraction")
        mean = check.get("confidence_mean_abs_error")
        row(
            grid,
            r.label,
            _fmt_ms(r),
            _fmt(1e3 / r.median_ms if r.median_ms else None, ".1f"),
            _fmt(r.ratio_to_mediapipe, ".2f", "x"),
            "-" if agree is None else f"{100 * (1 - agree):.4f} %",
            "-" if mean is None else f"{mean:.2g}",
            r.note,
        )
    return grid


def _agreement_table(rows: list[BenchRow]) -> Table:
    headers = [
        "backend",
        "content",
        "worst conf |diff|",
        "category pixels differing",
        "of which away from ties",
    ]
    grid = table(headers, "llrrr")
    keys = (
        *("gl", "gl_alloc", "gl_view", "gl_async", *VARIANTS, "cpu"),
        *("opencv", "torch", *CUDA_BACKENDS, "mediapipe", *E2E_MEDIAPIPE_PEER),
    )
    for key in keys:
        for content in ("model-like", "iid-noise", "photo"):
            checked = [
                r.vs_reference for r in rows if r.backend == key and r.content == content and r.vs_reference
            ]
            if not checked:
                continue
            conf = [c["confidence_max_abs_error"] for c in checked if "confidence_max_abs_error" in c]
            cat = [c["category_mismatch_fraction"] for c in checked if "category_mismatch_fraction" in c]
            far = [c.get("category_far_mismatches", 0) for c in checked]
            row(
                grid,
                BACKENDS[key],
                content,
                f"{max(conf):.2g}" if conf else "-",
                f"{100 * max(cat):.3f} %" if cat else "-",
                str(max(far)) if cat else "-",
            )
    return grid


def _goals_table(goals: list[dict[str, Any]]) -> Table:
    grid = table(["", "goal", "measured"], "lll")
    marks = {True: Text("PASS", GOOD), False: Text("MISS", BAD), None: Text("n/a", MUTED)}
    for goal in goals:
        row(grid, marks[goal["passed"]], goal["name"], goal["detail"])
    return grid
