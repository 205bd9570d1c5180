"""The fast exact CPU path (numba): MediaPipe's CPU post-processing, as fast as MediaPipe's own.

:class:`FastCPU` computes exactly what :mod:`gpu_seg.reference` (the specification) computes, with
numba kernels run on a small thread pool that the instance owns. numba is imported on first use:
when it cannot be, :func:`available` is False and :func:`unavailable_reason` says why, so callers
can fall back to :mod:`gpu_seg.reference`.

    >>> from gpu_seg import cpu
    >>> if cpu.available():
    ...     cpu.warm_up()                       # compile (or load from numba's cache) every kernel
    ...     fast = cpu.FastCPU(threads=4)
    ...     fast.confidence_masks(tensor, "softmax", 640, 480, out=conf)    # (C, 480, 640) float32
    ...     fast.category_mask(tensor, "softmax", 640, 480, out=cat)        # (480, 640) uint8

Compiled kernels are cached on disk by numba (``cache=True``: ``__pycache__`` next to the
sources, or ``NUMBA_CACHE_DIR``), so after the first run a new process only loads them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import forks
from ..errors import GpuSegError

if TYPE_CHECKING:
    from .fast import FastCPU

__all__ = ["FastCPU", "FastCPUUnavailableError", "available", "info", "unavailable_reason", "warm_up"]

_log = logging.getLogger("gpu_seg")
_lock = threading.Lock()
_warm_lock = threading.Lock()  # separate: available() must not wait for a compilation
_state: dict[str, Any] = {"checked": False, "reason": None, "warm": False}
#: The longest a fork waits for a warm-up under way (seconds); see :func:`_before_fork`.
FORK_WARM_WAIT_S = 120.0


class FastCPUUnavailableError(GpuSegError, RuntimeError):
    """The fast CPU path cannot run here (numba missing or broken); the message says why."""


def _check() -> None:
    with _lock:
        if _state["checked"]:
            return
        try:
            from . import fast  # noqa: F401 - imports numba and the kernels
        except Exception as exc:  # ImportError, or numba failing to initialise
            _state["reason"] = f"numba is not usable ({type(exc).__name__}: {exc}); pip install 'numba>=0.59'"
            _log.warning("gpu_seg fast CPU path unavailable: %s", _state["reason"])
        _state["checked"] = True


def available() -> bool:
    """Whether the fast CPU path can run (numba imports and the kernels load)."""
    _check()
    return _state["reason"] is None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False, or None when it is True."""
    _check()
    return _state["reason"]


def info() -> dict[str, Any]:
    """What the fast CPU path runs with, for reports and benchmark metadata.

    Keys: ``available``, ``reason`` (None when available), and when available ``numba`` (version),
    ``default_threads`` (what ``FastCPU()`` uses), ``float16`` (``"instruction"`` or ``"software"``
    conversion) and ``warm`` (whether :func:`warm_up` has run in this process).
    """
    result: dict[str, Any] = {"available": available(), "reason": unavailable_reason()}
    if result["available"]:
        import numba

        from . import _confidence_kernels
        from .fast import default_threads

        result.update(
            numba=numba.__version__,
            default_threads=default_threads(),
            float16="instruction" if _confidence_kernels.HARDWARE_HALF else "software",
            warm=_state["warm"],
        )
    return result


def warm_up() -> float:
    """Compile every kernel specialisation the processor can need, or load it from numba's cache.

    Runs each activation (none, sigmoid, softmax), each confidence dtype (float32, float16,
    uint8), one and several channels, channel subsets, the category shortcut on and off, the
    one-class thresholds and the multi-class sigmoid path, on tiny tensors, then once on a few
    worker threads. Later calls return at once. Returns the seconds spent (0.0 when already warm).

    Cost: a few seconds when numba's on-disk cache is empty (first run after an install or an
    upgrade: compilation), a few hundred milliseconds when it is filled (loading). Safe to call
    from a background thread at start-up; :func:`available` does not wait for it.

    Raises:
        FastCPUUnavailableError: numba cannot be used (see :func:`unavailable_reason`).
    """
    if not available():
        raise FastCPUUnavailableError(str(_state["reason"]))
    with _warm_lock:
        if _state["warm"]:
            return 0.0
        start = time.perf_counter()
        from ._warm import exercise_every_kernel

        exercise_every_kernel()
        _state["warm"] = True
        seconds = time.perf_counter() - start
    _log.debug("gpu_seg fast CPU path warmed up in %.3f s", seconds)
    return seconds


def _before_fork() -> bool:
    """Before a fork: wait for a warm-up under way, so that no compilation is cut off in the child
    (numba's compiler lock would stay held there by a thread that no longer exists)."""
    acquired = _warm_lock.acquire(timeout=FORK_WARM_WAIT_S)
    _state["fork_during_warm_up"] = not acquired  # read by the child
    return acquired


def _after_fork_in_parent(acquired: object) -> None:
    _state.pop("fork_during_warm_up", None)
    if acquired:
        _warm_lock.release()


def _after_fork_in_child() -> None:
    global _lock, _warm_lock
    _lock, _warm_lock = threading.Lock(), threading.Lock()
    if _state.pop("fork_during_warm_up", False) and not _state["warm"]:
        _state.update(
            checked=True,
            reason="the process was forked while the kernels were being compiled (for longer than "
            f"{FORK_WARM_WAIT_S:g} s): numba may be unusable here",
        )


forks.before_fork(_before_fork, _after_fork_in_parent)
forks.on_fork_in_child(_after_fork_in_child)


def __getattr__(name: str) -> Any:
    if name == "FastCPU":
        if not available():
            raise FastCPUUnavailableError(str(_state["reason"]))
        from .fast import FastCPU

        return FastCPU
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
