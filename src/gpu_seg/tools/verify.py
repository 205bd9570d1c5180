"""``gpu-seg verify``: the GL path, the fast CPU path and the numpy reference against real MediaPipe
CPU, on a seeded random battery.

Each case draws an activation (none, sigmoid, softmax), a channel count from
{1, 2, 3, 4, 5, 8, 21, 64}, a tensor size, an output size (upscale, downscale, same size or odd
sizes), a logit scale between 1 and 50 and a content kind (Gaussian logits, quantised logits with
exact ties, smooth model-like logits). The tensor goes through gpu_seg's GL path, gpu_seg's CPU
reference and MediaPipe's ImageSegmenter (:mod:`gpu_seg.tools.oracle`); both gpu_seg results are
judged against MediaPipe's with :func:`gpu_seg.tools.parity.parity`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..postprocessor import SegmentationPostprocessor
from ..reference import reference_postprocess
from ..types import Activation
from . import Progress, oracle
from . import parity as judge
from .bench.cases import model_like_tensor
from .messages import first_line

__all__ = [
    "CaseOutcome",
    "VerifyCase",
    "VerifyReport",
    "check_case",
    "iter_battery",
    "make_battery",
    "make_case",
    "run_verify",
]

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
    cpu: judge.Parity | None = None  #: the fast CPU path (a processor with ``backend="cpu"``)
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
            "cpu": None if self.cpu is None else asdict(self.cpu),
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
        tensor = model_like_tensor(shape, rng, cell=8, scale=scale)
    else:
        tensor = (rng.standard_normal(shape) * scale).astype(np.float32)
    return VerifyCase(index, activation, shape, (int(size[0]), int(size[1])), kind, scale, content, tensor)


def make_battery(cases: int, seed: int) -> list[VerifyCase]:
    """``cases`` cases drawn from one generator seeded with ``seed``."""
    return list(iter_battery(cases, seed))


def iter_battery(cases: int, seed: int) -> Iterator[VerifyCase]:
    """The cases of :func:`make_battery`, drawn one at a time (a long battery is never held whole)."""
    rng = np.random.default_rng(seed)
    for i in range(cases):
        yield make_case(rng, i)


#: The tensor of a case once it was checked (outcomes keep what describes the case, not its tensor).
_CHECKED = np.empty((0,), np.float32)


def check_case(
    case: VerifyCase,
    processors: dict[str, SegmentationPostprocessor],
    gl_error: str | None,
    cpu_processors: dict[str, SegmentationPostprocessor] | None = None,
) -> CaseOutcome:
    """Run one case through the GL path, the fast CPU path, the reference and MediaPipe, and judge
    each against MediaPipe."""
    outcome = CaseOutcome(case)
    tensor, activation, size = case.tensor, case.activation, case.output_size
    try:
        expected = oracle.mediapipe_postprocess(tensor, activation, size)
    except Exception as exc:
        outcome.problems.append(f"MediaPipe failed: {first_line(exc)}")
        return outcome
    want = (expected.confidence_masks, expected.category_mask)
    ref = reference_postprocess(tensor, activation, size)
    outcome.reference = judge.parity(ref.confidence_masks, ref.category_mask, *want, tensor, activation, size)
    if outcome.reference.problem:
        outcome.problems.append(f"reference: {outcome.reference.problem}")
    if cpu_processors:
        cpu = cpu_processors[activation].process(tensor, size)
        outcome.cpu = judge.parity(cpu.confidence_masks, cpu.category_mask, *want, tensor, activation, size)
        if outcome.cpu.problem:
            outcome.problems.append(f"fast CPU: {outcome.cpu.problem}")
    if gl_error is not None:
        outcome.problems.append(f"GL: {gl_error}")
        return outcome
    try:
        result = processors[activation].process(tensor, size)
    except Exception as exc:
        outcome.problems.append(f"GL failed: {first_line(exc)}")
        return outcome
    if result.backend != "gl":
        outcome.problems.append(f"GL: the frame ran on {result.backend!r}")
    outcome.gl = judge.parity(result.confidence_masks, result.category_mask, *want, tensor, activation, size)
    if outcome.gl.problem:
        outcome.problems.append(f"GL: {outcome.gl.problem}")
    return outcome


@dataclass
class VerifyReport:
    """A verify run: the battery's outcomes and where they were measured."""

    seed: int
    renderer: str | None
    gl_error: str | None
    mediapipe: str | None
    outcomes: list[CaseOutcome]
    wall_s: float = 0.0
    #: Whether the run was interrupted (Ctrl-C, SIGTERM): the outcomes are the cases checked by then.
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        """Counts and worst figures over the battery (the ``summary`` of the JSON)."""
        outcomes = self.outcomes

        def measured(side: str) -> list[judge.Parity]:
            return [getattr(o, side) for o in outcomes if getattr(o, side) is not None]

        def worst(side: str) -> float | None:
            values = [p.confidence_error for p in measured(side)]
            return max(values) if values else (None if outcomes else 0.0)

        def total(side: str, field: str) -> int | None:
            values = [getattr(p, field) for p in measured(side)]
            return sum(values) if values or not outcomes else None

        return {  # None: a path that checked no case (GL unavailable)
            "cases": len(outcomes),
            "passed": sum(o.ok for o in outcomes),
            "failed": self.failed,
            "worst_gl_confidence_error": worst("gl"),
            "worst_reference_confidence_error": worst("reference"),
            "gl_category_mismatches": total("gl", "mismatches"),
            "gl_category_near_ties": total("gl", "near_ties"),
            "reference_category_mismatches": total("reference", "mismatches"),
            "reference_category_near_ties": total("reference", "near_ties"),
            "worst_cpu_confidence_error": worst("cpu"),
            "cpu_category_mismatches": total("cpu", "mismatches"),
            "cpu_category_near_ties": total("cpu", "near_ties"),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "seed": self.seed,
            "renderer": self.renderer,
            "gl_error": self.gl_error,
            "mediapipe": self.mediapipe,
            "tolerances": {
                "confidence_atol": judge.CONFIDENCE_ATOL,
                "confidence_rtol_none": judge.CONFIDENCE_RTOL_NONE,
                "near_tie": judge.NEAR_TIE,
            },
            "summary": self.summary(),
            "cases": [o.to_dict() for o in self.outcomes],
            "wall_s": self.wall_s,
            "interrupted": self.interrupted,
        }


def run_verify(cases: int = DEFAULT_CASES, seed: int = 0, progress: Progress | None = None) -> VerifyReport:
    """Check a battery of ``cases`` cases drawn with ``seed``; ``progress(1, "failed=N")`` per case.

    Without GL only the reference is checked, and every case fails with the reason.

    Raises:
        OracleUnavailableError: MediaPipe is not installed.
    """
    if not oracle.mediapipe_available():
        raise oracle.OracleUnavailableError()
    started = time.perf_counter()
    processors: dict[str, SegmentationPostprocessor] = {}
    gl_error = None
    try:
        for activation in Activation:
            processors[activation.value] = SegmentationPostprocessor(activation, backend="gl")
    except Exception as exc:
        gl_error = f"GL unavailable: {first_line(exc)}"
    renderer = None
    if processors:
        renderer = getattr(next(iter(processors.values())).context_info, "renderer", None)
    cpu_processors = {a.value: SegmentationPostprocessor(a, backend="cpu") for a in Activation}
    outcomes: list[CaseOutcome] = []
    report = VerifyReport(seed, renderer, gl_error, oracle.mediapipe_version(), outcomes)
    try:
        for case in iter_battery(cases, seed):
            outcome = check_case(case, processors, gl_error, cpu_processors)
            outcome.case = dataclasses.replace(case, tensor=_CHECKED)
            outcomes.append(outcome)
            if progress is not None:
                progress(1, f"failed={sum(not o.ok for o in outcomes)}")
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM: the cases checked go with it
        report.interrupted = True
        interrupt.partial_report = report  # type: ignore[attr-defined]
        raise
    finally:
        for processor in (*processors.values(), *cpu_processors.values()):
            processor.close()
        report.wall_s = time.perf_counter() - started
    return report
