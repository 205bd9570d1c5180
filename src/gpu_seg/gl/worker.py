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

import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .. import forks
from ..errors import ContextLostError

__all__ = ["GLThread", "raised_on_gl_thread"]

T = TypeVar("T")
_STOP = object()
log = logging.getLogger("gpu_seg")


def _claim(token: list) -> bool:
    """Take a one-shot right (``list.pop`` is atomic): True for the one taker."""
    try:
        token.pop()
    except IndexError:
        return False
    return True


class _Call(Generic[T]):
    """One call handed to the GL thread.

    The caller and the GL thread share no lock: a signal handler's exception (a request timeout,
    Ctrl-C) may land anywhere in the waiting caller, even just after it took a lock and before it
    could let go of it, and a GL thread waiting for such a lock would wait for good. So the
    hand-off is a ``queue.SimpleQueue`` (C, safe against such exceptions: the GL thread's ``put``
    never waits) and one-shot rights taken with an atomic ``list.pop``: ``start`` (taken by the GL
    thread to run ``fn``, or by a caller who gave up to cancel it) and ``disposal`` (taken by
    whoever hands a result nobody waits for to ``abandoned``).
    """

    __slots__ = ("abandoned", "disposal", "done", "error", "fn", "reply", "result", "start")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn: Callable[[], T] | None = fn
        self.start: list = [True]
        self.disposal: list = [True]
        self.reply: queue.SimpleQueue = queue.SimpleQueue()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False
        self.abandoned: Callable[[T], None] | None = None

    def run(self) -> None:
        """On the GL thread: run ``fn`` unless cancelled, answer, dispose of an abandoned result."""
        fn, self.fn = self.fn, None
        if fn is None or not _claim(self.start):
            return
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc
        self.done = True
        self.reply.put(True)
        if self.abandoned is not None:
            self.dispose()

    def dispose(self) -> None:
        """Hand the result to ``abandoned`` (on the GL thread) unless someone already did."""
        if self.error is None and self.abandoned is not None and _claim(self.disposal):
            try:
                self.abandoned(self.result)  # type: ignore[arg-type]
            except BaseException:  # the thread never dies of a disposal
                log.exception("gpu_seg: disposing of an abandoned GL result failed")
        self.result = None


class GLThread:
    """A daemon thread that runs callables in order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._pid = forks.pid()
        self._stopped = False
        self._abandoned = False
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
            item: Any = self._queue.get()
            if item is _STOP:
                return
            item()  # a call's run or dispose, or posted work: none of them raises
            del item  # nothing of the work (a frame's result arrays) kept while idle

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
            try:
                return fn()
            except BaseException as exc:
                _mark(exc)
                raise
        if self._stopped:
            raise ContextLostError("the GL thread was stopped", reason="gl thread stopped")
        if forks.pid() != self._pid:  # a forked child: nothing would ever serve the call
            self._stopped = True
            raise ContextLostError("the GL thread is gone", reason="gl thread gone")
        call = _Call(fn)
        try:
            self._queue.put(call.run)  # inside: an exception just after it still finds the call
            call.reply.get(timeout=timeout)
        except queue.Empty:
            self._give_up(call, abandoned, cancel=True)
            self.abandon()
            raise ContextLostError(
                f"GL work did not finish within {timeout:g} s; the driver is considered hung",
                reason="gl call timed out",
            ) from None
        except BaseException:
            self._give_up(call, abandoned)
            raise
        if call.error is not None:
            error, call.error = call.error, None
            _mark(error)
            raise error
        return call.result  # type: ignore[return-value]

    def post(self, fn: Callable[[], object]) -> bool:
        """Queue ``fn`` without waiting for it (what it raises is logged); False where the thread
        takes no more work (stopped, or a forked child's)."""
        if self._stopped or forks.pid() != self._pid:
            return False
        self._queue.put(functools.partial(_logged, fn))
        return True

    def _give_up(self, call: _Call[T], abandoned: Callable[[T], None] | None, cancel: bool = False) -> None:
        """Nobody waits for ``call`` any more. Where its result needs ``abandoned`` (or ``cancel``:
        the thread is given up), it never runs if it has not started; otherwise its result goes to
        ``abandoned`` on this thread (now, if it already finished). Other calls run as queued."""
        if abandoned is None and not cancel:
            return
        if _claim(call.start) or abandoned is None:  # claimed: fn never runs
            return
        call.abandoned = abandoned
        if call.done:  # finished before it could see that nobody waits
            self._queue.put(call.dispose)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Finish queued work, then end the thread (and wait for it, unless it was abandoned: each
        call waits, so a stop cut short is finished by the next)."""
        if not self._stopped:
            self._queue.put(_STOP)  # first: cut short after it, the next stop() puts another (harmless)
            self._stopped = True
        if not self._abandoned and not self.is_current_thread():
            self._thread.join(timeout)

    def abandon(self) -> None:
        """Stop accepting work without waiting (the thread may be stuck in a driver call)."""
        self._abandoned = True
        self._stopped = True
        self._queue.put(_STOP)


def raised_on_gl_thread(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by work on a GL thread (a driver's failure, say), not in the
    waiting caller (where a signal handler's exception lands)."""
    return getattr(exc, "_gpu_seg_gl_thread", False) is True


def _mark(exc: BaseException) -> None:
    try:
        exc._gpu_seg_gl_thread = True  # type: ignore[attr-defined]
    except AttributeError:  # (an exception type without a __dict__)
        pass


def _logged(fn: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException:  # the thread never dies of posted work
        log.exception("gpu_seg: work posted to the GL thread failed")
