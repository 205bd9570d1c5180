"""The processor's lock: a re-entrant lock that refuses the processor's own GL thread.

``run_gl(function)`` runs ``function`` on the GL thread while the caller holds the processor's lock
and waits for it. A processor method called from inside ``function`` (``pp.stats``,
``pp.process``, reading lent textures...) would wait for that lock, held by a caller that waits
for the GL thread: a deadlock, or, with ``gl_timeout``, a frame counted as a hung driver. The lock
tells that case apart (its holder is another thread, and this is the GL thread) and raises instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .gl.worker import GLThread

__all__ = ["ProcessorLock"]


class ProcessorLock:
    """The processor's ``threading.RLock``, handed out by calling it: ``with lock():``.

    Calling it raises InputError (argument ``"function"``) when the processor's GL thread
    (``gl_thread()``) would wait for the lock. The ``with`` statement then takes the lock itself,
    in C: a lock taken in a Python ``__enter__`` could be kept for good by an exception a signal
    handler raises just after it is taken (a request timeout, Ctrl-C), and every other thread
    would wait for it.
    """

    def __init__(self, gl_thread: Callable[[], GLThread | None]) -> None:
        self._lock = threading.RLock()
        self._gl_thread = gl_thread

    def __call__(self) -> Any:
        thread = self._gl_thread()
        # Only the GL thread tries the lock here, and signal handlers never run on it.
        if thread is not None and thread.is_current_thread():
            if not self._lock.acquire(blocking=False):
                raise InputError(
                    "function",
                    "the processor was used inside run_gl (on its GL thread, while the run_gl caller "
                    "waits for it): that would wait for itself. Return what you need from the "
                    "function and use the processor after run_gl returns",
                )
            self._lock.release()
        return self._lock
