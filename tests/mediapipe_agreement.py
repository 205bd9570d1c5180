"""The parity tests' check of a result against MediaPipe's: :mod:`gpu_seg.tools.parity`'s rule
asserted, and the figures returned for the summary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpu_seg.tools.parity import parity

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    confidence_error: float
    mismatches: int
    near_tie_mismatches: int
    pixels: int


def compare(result, expected, tensor: np.ndarray, activation: str, size: tuple[int, int]) -> Comparison:
    """Check ``result`` against ``expected`` (MediaPipe) with the parity rule; return the figures."""
    for got, want in (
        (result.confidence_masks, expected.confidence_masks),
        (result.category_mask, expected.category_mask),
    ):
        if want is not None:
            assert got is not None and got.dtype == want.dtype
    report = parity(
        result.confidence_masks,
        result.category_mask,
        expected.confidence_masks,
        expected.category_mask,
        tensor,
        activation,
        size,
    )
    assert report.ok, report.problem
    return Comparison(report.confidence_error, report.mismatches, report.near_ties, report.pixels)
