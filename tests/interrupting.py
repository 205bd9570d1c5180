"""Exceptions raised where a signal handler's would land, at every such point of a call.

CPython runs signal handlers at a Python function's start and right after any call returns (Python's
or C's): the profiled ``call``, ``return`` and ``c_return`` events. Not at any line: between two lines
without a call no pending signal is checked. :func:`injected_at` raises an exception at the N-th such
point of a call; :func:`sweep` tries N = first, first + stride, ... until the call ends before it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["SIGNAL_POINTS", "InjectedError", "injected_at", "sweep"]

SIGNAL_POINTS = ("call", "return", "c_return")


class InjectedError(Exception):
    """Stands for what a signal handler raises (a request timeout, KeyboardInterrupt)."""


def injected_at(
    point: int,
    call: Callable[[], object],
    error: type[BaseException] = InjectedError,
    propagates: bool = False,
    watch: Callable[[object, str, object, bool], None] | None = None,
) -> bool:
    """``call()`` with ``error`` raised at its ``point``-th signal point; whether it was raised.

    ``propagates``: the exception must reach the caller (one raised in a weakref callback or a
    finalizer is dropped by Python itself, and passes). ``watch(frame, event, arg, raising)`` sees
    every signal point before the exception is raised at it.
    """
    events, fired = [0], [False]

    def tracer(frame, event, arg):
        if event not in SIGNAL_POINTS:
            return
        events[0] += 1
        raising = events[0] == point
        if watch is not None:
            watch(frame, event, arg, raising)
        if raising:
            fired[0] = True
            raise error

    caught, dropped = False, []

    def unraisable(info) -> None:
        dropped.append(info.exc_type)

    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    sys.setprofile(tracer)
    try:
        call()
    except error:
        caught = True
    finally:
        sys.setprofile(None)
        sys.unraisablehook = hook
    swallowed = propagates and fired[0] and not caught and error not in dropped
    assert not swallowed, f"the exception raised at point {point} was swallowed"
    return fired[0]


def sweep(attempt: Callable[[int], bool], first: int = 1, stride: int = 1, at_least: int = 3) -> None:
    """``attempt(point)`` (whether its exception was raised) for point = first, first + stride, ...
    until the call ended before the point; at least ``at_least`` points must have been tried."""
    point, tried = first, 0
    while attempt(point):
        point += stride
        tried += 1
        assert tried < 5000, "the call never ended without an injection"
    assert tried >= at_least, f"only {tried} points of the call were tried"
