"""Check the GL path and the numpy reference against real MediaPipe CPU on a seeded random battery.

Each case draws an activation (none, sigmoid, softmax), a channel count from
{1, 2, 3, 4, 5, 8, 21, 64}, a tensor size, an output size (upscale, downscale, same size or odd
sizes), a logit scale between 1 and 50 and a content kind (Gaussian logits, quantised logits with
exact ties, smooth model-like logits). The tensor goes through gpu_seg's GL path, gpu_seg's CPU
reference and MediaPipe's ImageSegmenter (CPU delegate, a constant model from gpu_seg.oracle).

Tolerances (the core issue's): confidence masks within 2e-5 of MediaPipe's (plus 1e-5 relative
with activation none); category masks identical except at near ties, output pixels whose top two
align-corners interpolated values differ by less than 1e-5; one-class category masks identical.

Needs the mediapipe extra: pip install "gpu_seg[mediapipe]".
Exit status: 0 when every case is within tolerance, 1 otherwise, 2 without MediaPipe or for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import bench_lib as bl
from .. import parity as judge
from ..types import Activation
from .args import positive_int
from .progress import Progress

CHANNELS = (1, 2, 3, 4, 5, 8, 21, 64)
SIZE_KINDS = ("up", "down", "same", "odd")
CONTENTS = ("gaussian", "gaussian", "quantised", "smooth")
DEFAULT_CASES = 24


@dataclass
class VerifyCase:
    """One random tensor and output size."""

    index: int
    activation: str
    tensor_shape: tuple[int, int, int]
    output_size: tuple[int, int]
    size_kind: str
    scale: float
    content: str
    tensor: np.ndarray = field(repr=False, compare=False)


@dataclass
class CaseOutcome:
    """What one case measured; ``problems`` is empty when the case is within tolerance."""

    case: VerifyCase
    gl: judge.Parity | None = None
    reference: judge.Parity | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        case = {k: v for k, v in asdict(self.case).items() if k != "tensor"}
        return {
            **case,
            "gl": None if self.gl is None else asdict(self.gl),
            "reference": None if self.reference is None else asdict(self.reference),
            "problems": self.problems,
            "ok": self.ok,
        }


def _side(rng: np.random.Generator, channels: int) -> int:
    top = 64 if channels <= 8 else (40 if channels <= 21 else 24)
    return int(rng.integers(2, top + 1))


def make_case(rng: np.random.Generator, index: int) -> VerifyCase:
    """Draw one case of the battery."""
    activation = str(rng.choice([a.value for a in Activation]))
    channels = int(rng.choice(CHANNELS))
    h, w = _side(rng, channels), _side(rng, channels)
    kind = str(rng.choice(SIZE_KINDS))
    if kind == "up":
        size = (round(w * rng.uniform(1.3, 4.0)), round(h * rng.uniform(1.3, 4.0)))
    elif kind == "down":
        size = (max(2, round(w / rng.uniform(1.3, 3.0))), max(2, round(h / rng.uniform(1.3, 3.0))))
    elif kind == "same":
        size = (w, h)
    else:
        size = (int(rng.integers(1, 100)) * 2 + 1, int(rng.integers(1, 100)) * 2 + 1)
    scale = float(math.exp(rng.uniform(math.log(1.0), math.log(50.0))))
    content = str(rng.choice(CONTENTS))
    shape = (h, w, channels)
    if content == "quantised":  # few distinct values: exact ties between channels and neighbours
        tensor = (np.round(rng.standard_normal(shape) * 2) / 2 * scale).astype(np.float32)
    elif content == "smooth":
        tensor = bl.model_like_tensor(shape, rng, cell=8, scale=scale)
    else:
        tensor = (rng.standard_normal(shape) * scale).astype(np.float32)
    return VerifyCase(index, activation, shape, (int(size[0]), int(size[1])), kind, scale, content, tensor)


def make_battery(cases: int, seed: int) -> list[VerifyCase]:
    """``cases`` cases drawn from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_case(rng, i) for i in range(cases)]


def check_case(case: VerifyCase, processors: dict[str, Any], gl_error: str | None) -> CaseOutcome:
    """Run one case through the GL path, the reference and MediaPipe, and judge both against MediaPipe."""
    from .. import oracle
    from ..reference import reference_postprocess

    outcome = CaseOutcome(case)
    tensor, activation, size = case.tensor, case.activation, case.output_size
    try:
        expected = oracle.mediapipe_postprocess(tensor, activation, size)
    except Exception as exc:
        outcome.problems.append(f"MediaPipe failed: {bl.first_line(exc)}")
        return outcome
    want = (expected.confidence_masks, expected.category_mask)
    ref = reference_postprocess(tensor, activation, size)
    outcome.reference = judge.parity(ref.confidence_masks, ref.category_mask, *want, tensor, activation, size)
    if outcome.reference.problem:
        outcome.problems.append(f"reference: {outcome.reference.problem}")
    if gl_error is not None:
        outcome.problems.append(f"GL: {gl_error}")
        return outcome
    try:
        result = processors[activation].process(tensor, size)
    except Exception as exc:
        outcome.problems.append(f"GL failed: {bl.first_line(exc)}")
        return outcome
    if result.backend != "gl":
        outcome.problems.append(f"GL: the frame ran on {result.backend!r}")
    outcome.gl = judge.parity(result.confidence_masks, result.category_mask, *want, tensor, activation, size)
    if outcome.gl.problem:
        outcome.problems.append(f"GL: {outcome.gl.problem}")
    return outcome


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--cases", type=positive_int, default=DEFAULT_CASES, help=f"random cases (default {DEFAULT_CASES})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the battery (default 0)")
    parser.add_argument("--json", metavar="PATH", help="also write every case's figures to PATH as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _mismatch_cell(p: judge.Parity | None) -> str:
    if p is None:
        return "n/a"
    if not p.mismatches:
        return "0"
    return f"{p.mismatches} ({p.near_ties} tie)"


def _conf_cell(p: judge.Parity | None) -> str:
    if p is None:
        return "n/a"
    return f"{p.confidence_error:.2g}"


def format_table(outcomes: list[CaseOutcome]) -> str:
    headers = [
        "case",
        "activation",
        "tensor",
        "output",
        "content",
        "scale",
        "gl conf err",
        "ref conf err",
        "gl cat mism",
        "ref cat mism",
        "status",
    ]
    body = []
    for o in outcomes:
        c = o.case
        h, w, ch = c.tensor_shape
        body.append(
            [
                str(c.index),
                c.activation,
                f"{h}x{w}x{ch}",
                f"{c.output_size[0]}x{c.output_size[1]} ({c.size_kind})",
                c.content,
                f"{c.scale:.1f}",
                _conf_cell(o.gl),
                _conf_cell(o.reference),
                _mismatch_cell(o.gl),
                _mismatch_cell(o.reference),
                "ok" if o.ok else "FAIL",
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    right = {0, 5, 6, 7, 8, 9}

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    for o in outcomes:
        for problem in o.problems:
            lines.append(f"  case {o.case.index}: {problem}")
    return "\n".join(lines)


def summary(outcomes: list[CaseOutcome]) -> dict[str, Any]:
    def worst(attr: str, side: str) -> float:
        values = [getattr(getattr(o, side), attr) for o in outcomes if getattr(o, side) is not None]
        return max(values) if values else 0.0

    return {
        "cases": len(outcomes),
        "passed": sum(o.ok for o in outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "worst_gl_confidence_error": worst("confidence_error", "gl"),
        "worst_reference_confidence_error": worst("confidence_error", "reference"),
        "gl_category_mismatches": sum(o.gl.mismatches for o in outcomes if o.gl),
        "gl_category_near_ties": sum(o.gl.near_ties for o in outcomes if o.gl),
        "reference_category_mismatches": sum(o.reference.mismatches for o in outcomes if o.reference),
        "reference_category_near_ties": sum(o.reference.near_ties for o in outcomes if o.reference),
    }


def run(args: argparse.Namespace) -> int:
    from .. import oracle

    if not oracle.mediapipe_available():
        print(
            "gpu-seg verify compares against real MediaPipe, which is not installed.\n"
            f"Install the extra: {bl.INSTALL_MEDIAPIPE}",
            file=sys.stderr,
        )
        return 2
    from ..postprocessor import SegmentationPostprocessor

    started = time.perf_counter()
    battery = make_battery(args.cases, args.seed)
    processors: dict[str, Any] = {}
    gl_error = None
    try:
        for activation in Activation:
            processors[activation.value] = SegmentationPostprocessor(activation, backend="gl")
    except Exception as exc:
        gl_error = f"GL unavailable: {bl.first_line(exc)}"
        print(f"gpu-seg verify: {gl_error}; only the reference is checked", file=sys.stderr)
    renderer = None
    if processors:
        info = next(iter(processors.values())).context_info
        renderer = getattr(info, "renderer", None)
    outcomes: list[CaseOutcome] = []
    bar = None if args.quiet else Progress(len(battery), "verify")
    try:
        for case in battery:
            outcomes.append(check_case(case, processors, gl_error))
            if bar is not None:
                bar.advance(1, f"failed={sum(not o.ok for o in outcomes)}")
    finally:
        for processor in processors.values():
            processor.close()
        if bar is not None:
            bar.finish()
    figures = summary(outcomes)
    print(
        f"gpu-seg verify: {len(battery)} cases, seed {args.seed}; GL: {renderer or gl_error}; "
        f"MediaPipe {oracle.mediapipe_version()}"
    )
    print(format_table(outcomes))
    print(
        f"worst: GL conf |diff| {figures['worst_gl_confidence_error']:.2g}, "
        f"reference conf |diff| {figures['worst_reference_confidence_error']:.2g}; category mismatches: "
        f"GL {figures['gl_category_mismatches']} ({figures['gl_category_near_ties']} at near ties), "
        f"reference {figures['reference_category_mismatches']} "
        f"({figures['reference_category_near_ties']} at near ties); "
        f"{figures['passed']}/{figures['cases']} cases within tolerance"
    )
    if args.json:
        document = {
            "seed": args.seed,
            "renderer": renderer,
            "gl_error": gl_error,
            "mediapipe": oracle.mediapipe_version(),
            "tolerances": {
                "confidence_atol": judge.CONFIDENCE_ATOL,
                "confidence_rtol_none": judge.CONFIDENCE_RTOL_NONE,
                "near_tie": judge.NEAR_TIE,
            },
            "summary": figures,
            "cases": [o.to_dict() for o in outcomes],
            "wall_s": time.perf_counter() - started,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, default=float)
            out.write("\n")
    if figures["failed"]:
        print(f"verify failed: {figures['failed']} case(s) outside tolerance", file=sys.stderr)
        return 1
    return 0
