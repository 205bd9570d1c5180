"""The rows of a bench report: one backend's timing of one case in one output mode.

Also the derived figures (ratio to MediaPipe, floor time, fraction of the copy bandwidth) and the
agreement of a backend's masks with MediaPipe's semantics (the gpu_seg CPU reference).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..parity import confidence_error, far_from_ties
from .cases import BenchCase
from .end_to_end import E2E_MEDIAPIPE_PEER
from .runner import BACKENDS, Outputs

__all__ = ["BenchRow", "compare_to_reference", "finish_rows", "new_row"]


@dataclass
class BenchRow:
    """One backend's timing of one case in one output mode (a ``cases`` entry of the JSON)."""

    preset: str
    tensor_shape: tuple[int, int, int]
    output_size: tuple[int, int]
    activation: str
    content: str
    boundary_fraction: float
    outputs: str
    backend: str
    label: str
    median_ms: float | None = None
    iqr_ms: float | None = None
    samples: int = 0
    samples_ms: list[float] = field(default_factory=list)
    bytes_moved: int = 0
    floor_ms: float | None = None
    ratio_to_mediapipe: float | None = None
    fraction_of_copy_bandwidth: float | None = None
    vs_reference: dict[str, Any] | None = None
    #: Free text about the row; no backend has anything to say today (kept in the JSON layout).
    note: str = ""
    unavailable: str | None = None

    @property
    def timed(self) -> bool:
        """The backend ran and has a median."""
        return self.median_ms is not None and not self.unavailable

    def same_cell(self, other: BenchRow) -> bool:
        return (self.preset, self.content, self.outputs, self.tensor_shape, self.output_size) == (
            other.preset,
            other.content,
            other.outputs,
            other.tensor_shape,
            other.output_size,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        """A row back from its JSON form (lists become tuples again)."""
        return cls(
            **{**data, "tensor_shape": tuple(data["tensor_shape"]), "output_size": tuple(data["output_size"])}
        )


def new_row(case: BenchCase, mode: str, key: str, **figures: Any) -> BenchRow:
    """A row for backend ``key`` on ``case`` in output ``mode``, with ``figures`` filled in."""
    return BenchRow(
        preset=case.preset,
        tensor_shape=case.shape,
        output_size=case.output_size,
        activation=case.activation,
        content=case.content,
        boundary_fraction=case.boundary_fraction,
        outputs=mode,
        backend=key,
        label=BACKENDS[key],
        **figures,
    )


def finish_rows(rows: Iterable[BenchRow], gbps: float) -> None:
    """Fill the derived figures: ratio to MediaPipe, floor time and fraction of copy bandwidth."""
    rows = list(rows)
    for row in rows:
        if not row.timed:
            continue
        if gbps > 0 and row.bytes_moved:
            row.floor_ms = row.bytes_moved / (gbps * 1e9) * 1e3
            row.fraction_of_copy_bandwidth = row.floor_ms / row.median_ms
        peer = E2E_MEDIAPIPE_PEER.get(row.backend, "mediapipe")
        mediapipe = next(
            (r for r in rows if r.backend == peer and r.same_cell(row) and r.median_ms and r.timed),
            None,
        )
        if mediapipe is not None:
            row.ratio_to_mediapipe = row.median_ms / mediapipe.median_ms


def compare_to_reference(
    runner_outputs: Outputs,
    reference_outputs: tuple[np.ndarray | None, np.ndarray | None],
    case: BenchCase,
    channels: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Agreement of a backend's last masks with gpu_seg's CPU reference (MediaPipe semantics).

    ``channels``: the reference channels the backend's confidence planes hold (default: all).
    uint8 masks are compared after dividing by 255. ``parity_ok`` says whether float32 masks meet
    the tolerances of :mod:`gpu_seg.tools.parity` (and the category mask differs only at near ties).
    """
    conf, cat = runner_outputs
    ref_conf, ref_cat = reference_outputs
    report: dict[str, Any] = {}
    if conf is not None and ref_conf is not None:
        expected = len(ref_conf) if channels is None else len(channels)
        if len(conf) == expected and all(np.shape(p) == ref_conf.shape[1:] for p in conf):
            dtype = np.asarray(conf[0]).dtype if len(conf) else np.dtype(np.float32)
            scale = 255.0 if dtype == np.uint8 else 1.0
            worst, bad = confidence_error(conf, ref_conf, case.activation, channels, scale)
            report["confidence_max_abs_error"] = worst
            if case.content == "photo":  # end to end: the mean is what the parity goal bounds
                means = [np.abs(np.asarray(p, np.float64) - ref_conf[i]).mean() for i, p in enumerate(conf)]
                report["confidence_mean_abs_error"] = float(np.mean(means))
            if dtype == np.float32:
                report["parity_ok"] = bad == 0
        else:
            report["error"] = f"{len(conf)} confidence planes, expected {expected} of {ref_conf.shape[1:]}"
            report["parity_ok"] = False
    if cat is not None and ref_cat is not None and cat.shape == ref_cat.shape:
        differs = cat != ref_cat
        report["category_mismatch_fraction"] = float(differs.mean())
        if case.channels > 1:
            report["category_far_mismatches"] = far_from_ties(
                differs, case.tensor, case.activation, case.output_size
            )
        else:
            report["category_far_mismatches"] = int(differs.sum())
        report["parity_ok"] = report.get("parity_ok", True) and report["category_far_mismatches"] == 0
    return report
