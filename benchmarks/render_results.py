"""Render the JSON of ``gpu-seg bench --json`` as the Markdown figures of ``RESULTS.md``.

    python benchmarks/render_results.py benchmarks/results-llvmpipe.json            # print
    python benchmarks/render_results.py benchmarks/results-llvmpipe.json --update benchmarks/RESULTS.md

With ``--update`` only the text between ``<!-- generated:start -->`` and ``<!-- generated:end -->``
is replaced, so the hand-written commentary around it stays (re-read it after a rerun: it quotes
figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- generated:start -->", "<!-- generated:end -->"
COLUMNS = {
    "gl": "gpu_seg GL",
    "gl_alloc": "GL (no prealloc)",
    "gl_view": "GL zero-copy view",
    "gl_async": "GL in flight (ms/frame)",
    "cpu": "gpu_seg CPU",
    "opencv": "OpenCV",
    "torch": "PyTorch CPU",
    "mediapipe": "MediaPipe CPU",
}
PEERS = ("mediapipe", "opencv", "torch", "cpu")
#: GL rows that are not confidence-format variants.
NOT_VARIANTS = ("gl_alloc", "gl_view", "gl_async")


def _ms(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row.get("median_ms") is None:
        return "n/a"
    median, iqr = row["median_ms"], row.get("iqr_ms") or 0.0
    digits = 2 if median < 100 else 1
    return f"{median:.{digits}f} ±{iqr:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _cells(report: dict[str, Any]) -> dict[tuple, dict[str, dict[str, Any]]]:
    cells: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in report["cases"]:
        key = (
            row["preset"],
            row["content"],
            row["outputs"],
            tuple(row["tensor_shape"]),
            tuple(row["output_size"]),
        )
        cells.setdefault(key, {})[row["backend"]] = row
    return cells


def _timed(row: dict[str, Any] | None) -> bool:
    return row is not None and row.get("median_ms") is not None and not row.get("unavailable")


def render(report: dict[str, Any]) -> str:
    meta, settings = report["metadata"], report["settings"]
    gl, versions, git = meta.get("gl", {}), meta.get("versions", {}), meta.get("git", {})
    out: list[str] = []
    add = out.append
    add("### Machine and run")
    add("")
    add(
        f"- CPU: {meta.get('cpu')}, {meta.get('cpus_usable')} usable cores, {meta.get('memory_gib')} GiB; "
        f"{meta.get('platform')}, Python {meta.get('python')}"
    )
    add(f"- GL: {gl.get('renderer', gl.get('error', 'n/a'))}, {gl.get('version', '')}")
    add("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    add(f"- Threads: {meta.get('threads')}; env: {meta.get('env') or '{}'}")
    add(f"- git: `{git.get('commit')}`" + (" (uncommitted changes)" if git.get("dirty") else ""))
    add(f"- Date (UTC): {meta.get('time_utc')}; wall time of the run: {report.get('wall_s', 0):.0f} s")
    add(
        f"- Load average (1/5/15 min): {meta.get('load_average')} at the start, "
        f"{meta.get('load_average_end')} at the end (the machine has {meta.get('cpus_usable')} cores)"
    )
    add(
        f"- Copy bandwidth (np.copyto of {report['copy_bandwidth']['buffer_mib']:.0f} MiB, read + write): "
        f"**{report['copy_bandwidth_gbps']:.1f} GB/s**"
    )
    add(
        f"- Method: {settings['warmup']} warm-up + up to {settings['frames']} timed frames per backend "
        f"(a backend stops after 3 frames once it has spent {settings['max_seconds']:g} s), back to back, "
        f"{settings.get('pause_s', 0):g} s pause between backends; seed {settings['seed']}"
    )
    add("")

    cells = _cells(report)
    present = [k for k in COLUMNS if any(k in c for c in cells.values())]
    add("### Timings (median ±IQR, ms)")
    add("")
    add(
        "MB = tensor in + float32 confidence masks / uint8 category mask out; floor = MB at the copy "
        "bandwidth; bnd = fraction of class-boundary texels in the tensor. GL/MP < 1: gpu_seg GL is faster "
        "than MediaPipe CPU."
    )
    add("")
    header = [
        "preset",
        "content",
        "bnd",
        "outputs",
        "MB",
        "floor ms",
        *(COLUMNS[k] for k in present),
        "GL/MP",
        "GL/floor",
    ]
    add("| " + " | ".join(header) + " |")
    add("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
    for (preset, content, outputs, _shape, _size), cell in cells.items():
        base = cell.get("gl")
        sized = base if _timed(base) else next((r for r in cell.values() if r.get("bytes_moved")), None)
        ratio = base.get("ratio_to_mediapipe") if _timed(base) else None
        floor = sized.get("floor_ms") if sized else None
        to_floor = base["median_ms"] / base["floor_ms"] if _timed(base) and base.get("floor_ms") else None
        row = [
            preset,
            content,
            f"{100 * next(iter(cell.values()))['boundary_fraction']:.1f} %",
            outputs,
            f"{sized['bytes_moved'] / 1e6:.3g}" if sized else "-",
            f"{floor:.3g}" if floor else "-",
            *(_ms(cell.get(k)) for k in present),
            f"{ratio:.2f}" if ratio is not None else "n/a",
            f"{to_floor:.1f}x" if to_floor is not None else "n/a",
        ]
        add("| " + " | ".join(row) + " |")
    add("")

    variants = [
        r for r in report["cases"] if r["backend"].startswith("gl_") and r["backend"] not in NOT_VARIANTS
    ]
    if variants:
        add("### GL confidence variants")
        add("")
        if all(not _timed(r) for r in variants):
            reasons = sorted({r.get("unavailable") or "" for r in variants})
            add("Not timed: " + "; ".join(reasons))
        else:
            add("| preset | outputs | variant | ms | MB | vs GL float32 | GL/MP | max error vs reference |")
            add("|---|---|---|---:|---:|---:|---:|---:|")
            for row in variants:
                base = cells[_key(row)].get("gl")
                rel = row["median_ms"] / base["median_ms"] if _timed(row) and _timed(base) else None
                err = (row.get("vs_reference") or {}).get("confidence_max_abs_error")
                add(
                    f"| {row['preset']} | {row['outputs']} | {row['label']} | {_ms(row)} | "
                    f"{row['bytes_moved'] / 1e6:.3g} | {f'{rel:.2f}x' if rel else 'n/a'} | "
                    f"{_ratio(row.get('ratio_to_mediapipe'))} | {f'{err:.2g}' if err is not None else '-'} |"
                    if _timed(row)
                    else f"| {row['preset']} | {row['outputs']} | {row['label']} | n/a | | | | "
                    f"{row.get('unavailable', '')} |"
                )
        add("")

    add("### Goals")
    add("")
    add("| goal | result | measured |")
    add("|---|---|---|")
    for goal in report["goals"]:
        mark = {True: "PASS", False: "**MISS**", None: "n/a"}[goal["passed"]]
        add(f"| {goal['name']} | {mark} | {goal['detail']} |")
    add("")

    add("### Wins and losses of gpu_seg GL")
    add("")
    add("Speed-up of gpu_seg GL over each peer (peer median / GL median): > 1 is a win, < 1 a loss.")
    add("")
    peers = [p for p in PEERS if p in present]
    add("| preset | content | outputs | " + " | ".join(f"vs {COLUMNS[p]}" for p in peers) + " |")
    add("|---|---|---|" + "---:|" * len(peers))
    wins, losses = [], []
    for (preset, content, outputs, _shape, _size), cell in cells.items():
        base = cell.get("gl")
        if not _timed(base):
            continue
        values = []
        for peer in peers:
            other = cell.get(peer)
            if not _timed(other):
                values.append("n/a")
                continue
            speedup = other["median_ms"] / base["median_ms"]
            values.append(f"{speedup:.2f}" if speedup < 1 else f"**{speedup:.2f}**")
            (wins if speedup >= 1 else losses).append((speedup, preset, content, outputs, COLUMNS[peer]))
        add(f"| {preset} | {content} | {outputs} | " + " | ".join(values) + " |")
    add("")
    add(f"{len(wins)} wins, {len(losses)} losses.")
    if losses:
        worst = sorted(losses)[:6]
        add(
            "Largest losses: "
            + "; ".join(f"{p} {c} {o} vs {peer} ({1 / s:.1f}x slower)" for s, p, c, o, peer in worst)
            + "."
        )
    if wins:
        best = sorted(wins, reverse=True)[:6]
        add(
            "Largest wins: "
            + "; ".join(f"{p} {c} {o} vs {peer} ({s:.1f}x faster)" for s, p, c, o, peer in best)
            + "."
        )
    add("")

    add("### Agreement with MediaPipe semantics")
    add("")
    add(
        "Each backend's last masks against gpu_seg's CPU reference (which `gpu-seg verify` checks against "
        "real MediaPipe). Tolerance: confidence |diff| <= 2e-5; category identical except near ties (< 1e-5)."
    )
    add("")
    add("| backend | content | worst confidence abs diff | category pixels differing | away from near ties |")
    add("|---|---|---:|---:|---:|")
    for key in ("gl", "gl_alloc", "gl_view", "gl_async", "opencv", "torch", "mediapipe"):
        for content in ("model-like", "iid-noise"):
            checked = [
                r
                for r in report["cases"]
                if r["backend"] == key and r["content"] == content and r.get("vs_reference")
            ]
            if not checked:
                continue
            conf = [r["vs_reference"].get("confidence_max_abs_error") for r in checked]
            conf = [c for c in conf if c is not None]
            cat = [r["vs_reference"].get("category_mismatch_fraction") for r in checked]
            cat = [c for c in cat if c is not None]
            far = [r["vs_reference"].get("category_far_mismatches", 0) for r in checked]
            add(
                f"| {COLUMNS.get(key, key)} | {content} | {f'{max(conf):.2g}' if conf else '-'} | "
                f"{f'{100 * max(cat):.3f} %' if cat else '-'} | {max(far) if cat else '-'} |"
            )
    add("")
    return "\n".join(out)


def _key(row: dict[str, Any]) -> tuple:
    return (
        row["preset"],
        row["content"],
        row["outputs"],
        tuple(row["tensor_shape"]),
        tuple(row["output_size"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, help="the output of gpu-seg bench --json")
    parser.add_argument(
        "--update", type=Path, metavar="MARKDOWN", help="replace the generated part of this file"
    )
    args = parser.parse_args(argv)
    text = render(json.loads(args.json.read_text(encoding="utf-8")))
    if not args.update:
        print(text)
        return 0
    document = args.update.read_text(encoding="utf-8") if args.update.exists() else f"{START}\n{END}\n"
    if START not in document or END not in document:
        print(f"{args.update} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    head, rest = document.split(START, 1)
    _, tail = rest.split(END, 1)
    args.update.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")
    print(f"updated {args.update}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
