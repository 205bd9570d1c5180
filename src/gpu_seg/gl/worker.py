"""The thread that owns the EGL context of an owned GL session.

Threading model: the EGL context of an owned session (``OwnedSession``) lives on one dedicated
thread for its whole life: it is created, made current, used and destroyed there. A processor
keeps one GL thread across context generations and replaces it only when it hangs. Callers on any
thread hand work to it with :meth:`GLThread.call` and wait for the result, so
``SegmentationPostprocessor.process`` may be called from several threads at once (calls are
served one at a time, in arrival order). A call that does not finish within its timeout (a hung
driver) is reported as a context loss; the stuck thread is abandoned, never joined, and the
next generation gets a new thread.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import ContextLostError

__all__ = ["GLThread"]

T = TypeVar("T")
_STOP = object()
log = logging.getLogger("gpu_seg")


class GLThread:
    """A daemon thread that runs callables in order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    @property
    def usable(self) -> bool:
        """False once stopped or abandoned (for example after a timeout)."""
        return not self._stopped

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def is_current_thread(self) -> bool:
        """Whether the caller runs on this thread (by identity: a finished thread's ident is handed
        to later threads)."""
        return threading.current_thread() is self._thread

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            del item, future, fn  # nothing of the work (a frame's result arrays) kept while idle

    def call(
        self,
        fn: Callable[[], T],
        timeout: float | None = None,
        abandoned: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` on the thread and return its result (its exception is re-raised here).

        ``abandoned(result)``: what to do with a result nobody waits for any more, if the caller
        stops waiting (an exception raised while it waited: KeyboardInterrupt, a signal
        handler's); it runs on this thread once ``fn`` has returned (for a context that was being
        made: destroy it).

        Raises:
            ContextLostError: ``fn`` did not finish within ``timeout`` seconds.
        """
        if self.is_current_thread():
            return fn()
        if self._stopped:
            raise ContextLostError("the GL thread was stopped", reason="gl thread stopped")
        if not self._thread.is_alive():  # e.g. in a forked child: nothing would ever serve the call
            self._stopped = True
            raise ContextLostError("the GL thread is gone", reason="gl thread gone")
        future: futures.Future = futures.Future()
        self._queue.put((future, fn))
        try:
            return future.result(timeout)
        except futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            future.cancel()
            self.abandon()
            raise ContextLostError(
                f"GL work did not finish within {timeout:g} s; the driver is considered hung",
                reason="gl call timed out",
            ) from None
        except BaseException:
            if abandoned is not None and not future.cancel():  # cancelled: fn never runs
                future.add_done_callback(functools.partial(_dispose, abandoned))
            raise

    def stop(self, timeout: float | None = 5.0) -> None:
        """Finish queued work, then end the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        if not self.is_current_thread():
            self._thread.join(timeout)

    def abandon(self) -> None:
        """Stop accepting work without waiting (the thread may be stuck in a driver call)."""
        self._stopped = True
        self._queue.put(_STOP)


def _dispose(abandoned: Callable[[T], None], future: futures.Future) -> None:
    """A done-callback: hand a result that nobody waits for to ``abandoned`` (errors are logged)."""
    if future.cancelled() or future.exception() is not None:
        return
    try:
        abandoned(future.result())
    except Exception:
        log.exception("gpu_seg: disposing of an abandoned GL result failed")
