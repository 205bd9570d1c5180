"""When to rebuild, when to give up on the GPU, and when to try it again: pure logic, no GL.

Settings and state are separate: :class:`RecoveryPolicy` (with :class:`LossBudget` and
:class:`Backoff`) is an immutable description that may be shared by any number of processors;
each processor keeps its own :class:`RecoveryState` (``policy.new_state()``), so two processors
never share a loss budget or a fallback flag.

The policy follows Chromium's GPU-process crash handling (``gpu_process_host.cc``: at most 3
crashes, a leaky bucket that forgets about one per hour, then software fallback), scaled to a
library that must keep producing frames:

* every context loss takes one unit from a budget of ``capacity`` units (default 3); one unit
  comes back every ``forgive_after`` seconds (default 600 s);
* while the budget holds, the processor rebuilds at once for the first loss and then with
  exponential backoff (default 50 ms doubling up to 2 s) for losses in quick succession;
* once the budget is spent, or when no context can be created at all, ``backend="auto"`` switches
  to the CPU path and re-probes the GPU every ``reprobe_interval`` seconds (default 30 s);
  ``backend="gl"`` raises instead.

Times come from an injectable clock so tests can drive the policy without sleeping.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import InputError

__all__ = ["Backoff", "LossBucket", "LossBudget", "RecoveryPolicy", "RecoveryState"]

Clock = Callable[[], float]


def _number(value: object, argument: str, *, positive: bool = False, whole: bool = False) -> None:
    """Raise InputError naming ``argument`` unless ``value`` is a real number >= 0 (> 0 with
    ``positive``; a whole number with ``whole``); +inf is allowed (never forgive, never re-probe,
    no cap on losses), NaN is not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(argument, f"{value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise InputError(argument, f"{value!r} is too large") from None
    if math.isnan(number) or not (number > 0 if positive else number >= 0):
        raise InputError(argument, f"{value!r} is not a number {'> 0' if positive else '>= 0'}")
    if whole and math.isfinite(number) and not number.is_integer():
        raise InputError(argument, f"{value!r} is not a whole number")


@dataclass(frozen=True)
class LossBudget:
    """Settings of the leaky bucket of context losses.

    Args:
        capacity: losses that are rebuilt; the next one inside the window exhausts the budget.
        forgive_after: seconds after which one recorded loss is forgotten.
    """

    capacity: int = 3
    forgive_after: float = 600.0

    def __post_init__(self) -> None:
        _number(self.capacity, "capacity", whole=True)
        _number(self.forgive_after, "forgive_after", positive=True)


class LossBucket:
    """The state of one :class:`LossBudget`: losses counted now, leaking on ``clock``."""

    def __init__(self, budget: LossBudget, clock: Clock = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._level = 0.0
        self._updated: float | None = None

    def _leak(self) -> None:
        now = self._clock()
        if self._updated is not None:
            self._level = max(0.0, self._level - (now - self._updated) / self.budget.forgive_after)
        self._updated = now

    @property
    def level(self) -> float:
        """Losses currently counted (fractional while one is being forgiven)."""
        self._leak()
        return self._level

    def record_loss(self) -> bool:
        """Count a loss; returns whether it may still be rebuilt (``False``: budget exhausted)."""
        self._leak()
        self._level += 1.0
        return self._level <= self.budget.capacity + 1e-9

    def exhaust(self) -> None:
        """Use up the whole budget, so the next loss falls back (fault injection and tests)."""
        self._leak()
        self._level = float(self.budget.capacity)

    def reset(self) -> None:
        self._level = 0.0
        self._updated = None


@dataclass(frozen=True)
class Backoff:
    """Delay before a rebuild: 0 for the first attempt, then ``base * factor**(n-1)`` up to ``cap``."""

    base: float = 0.05
    factor: float = 2.0
    cap: float = 2.0

    def __post_init__(self) -> None:
        for name in ("base", "factor", "cap"):
            value = getattr(self, name)
            _number(value, name)
            if not math.isfinite(value):
                raise InputError(name, f"{value!r} is not finite")
        if self.cap > threading.TIMEOUT_MAX:  # a delay time.sleep() takes
            raise InputError(
                "cap", f"{self.cap!r} s is longer than the longest wait ({threading.TIMEOUT_MAX:.3g} s)"
            )

    def delay(self, attempt: int) -> float:
        if attempt <= 0 or self.base == 0:
            return 0.0
        try:
            return min(self.cap, self.base * self.factor ** (attempt - 1))
        except OverflowError:  # a long burst: far beyond any finite cap
            return self.cap


@dataclass(frozen=True)
class RecoveryPolicy:
    """Recovery settings: loss budget, backoff, re-probe interval (immutable; shareable).

    Args:
        budget: the leaky bucket of losses.
        backoff: delays between rebuilds of losses in quick succession.
        reprobe_interval: seconds between attempts to return to the GPU while falling back.
        quick_succession: losses closer together than this count as one burst for the backoff.
        clock: monotonic time source in seconds.
    """

    budget: LossBudget = field(default_factory=LossBudget)
    backoff: Backoff = field(default_factory=Backoff)
    reprobe_interval: float = 30.0
    quick_succession: float = 5.0
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        if not isinstance(self.budget, LossBudget):
            raise InputError("budget", f"expected a gpu_seg.LossBudget, got {type(self.budget).__name__}")
        if not isinstance(self.backoff, Backoff):
            kind = type(self.backoff).__name__
            raise InputError("backoff", f"expected a gpu_seg.Backoff, got {kind}")
        _number(self.reprobe_interval, "reprobe_interval")
        _number(self.quick_succession, "quick_succession")
        if not callable(self.clock):
            raise InputError("clock", f"{self.clock!r} is not callable (a function returning seconds)")

    def new_state(self) -> RecoveryState:
        """A fresh state for one processor."""
        return RecoveryState(self)


class RecoveryState:
    """One processor's recovery state machine: losses, backoff bursts, fallback and re-probe."""

    def __init__(self, policy: RecoveryPolicy) -> None:
        self.policy = policy
        self.bucket = LossBucket(policy.budget, policy.clock)
        self.fallback_active = False
        self.fallback_reason = ""
        self._next_probe = 0.0
        self._burst = 0
        self._last_loss: float | None = None

    def record_loss(self) -> tuple[bool, float]:
        """Count a loss. Returns ``(may_rebuild, delay_seconds)``."""
        now = self.policy.clock()
        if self._last_loss is not None and now - self._last_loss < self.policy.quick_succession:
            self._burst += 1
        else:
            self._burst = 0
        self._last_loss = now
        if not self.bucket.record_loss():
            return False, 0.0
        return True, self.policy.backoff.delay(self._burst)

    def enter_fallback(self, reason: str) -> None:
        """Switch to the CPU path; the next GPU probe is ``reprobe_interval`` from now."""
        self.fallback_active = True
        self.fallback_reason = reason
        self._next_probe = self.policy.clock() + self.policy.reprobe_interval

    def probe_due(self) -> bool:
        """Whether a fallback processor should try the GPU again now."""
        return self.fallback_active and self.policy.clock() >= self._next_probe

    def probe_failed(self) -> None:
        self._next_probe = self.policy.clock() + self.policy.reprobe_interval

    def leave_fallback(self) -> None:
        """The GPU works again: forget the losses that led to the fallback."""
        self.fallback_active = False
        self.fallback_reason = ""
        self.bucket.reset()
        self._burst = 0
        self._last_loss = None
