"""The PNG bar chart of a bench report: one panel per preset and content, bars per backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from .cases import MODES
from .runner import BACKENDS

__all__ = ["write_plot"]


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
    keys = [k for k in BACKENDS if any(r["backend"] == k for r in rows)]
    n = max(1, len(panels))
    cols = 2 if n > 1 else 1
    nrows = (n + cols - 1) // cols
    legend_in = 0.8
    height_in = 3.6 * nrows + legend_in
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, height_in), squeeze=False)
    colors = plt.get_cmap("tab10")
    for index, ((preset, content), prow) in enumerate(panels.items()):
        ax = axes[index // cols][index % cols]
        modes = [m for m in MODES if any(r["outputs"] == m for r in prow)]
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
                ax.bar(xs, ys, width, yerr=[low, high], label=BACKENDS[key], color=colors(k % 10))
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
