"""A small bounded thread pool for nogil kernels; the calling thread works too.

The pool is owned by one :class:`~gpu_seg.cpu.FastCPU`, so nothing here is process-global (unlike
numba's parallel threading layer). Tasks are numbered; idle threads take the next number, which
balances uneven rows (the category shortcut makes some rows much cheaper than others).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .. import forks

__all__ = ["WorkerPool"]


class WorkerPool:
    """Runs ``task(i)`` for ``i`` in ``range(count)`` on up to ``threads`` threads.

    The calling thread takes part, so the executor holds ``threads - 1`` threads, created by
    :meth:`start` (or the first :meth:`run`). ``threads == 1`` runs everything in the calling thread.
    """

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        forks.track(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child the executor's threads are gone: forget it (:meth:`start` makes anew)."""
        self._executor = None

    def start(self) -> None:
        """Create every worker thread now, so that the first frame does not pay for it."""
        if self.threads == 1 or self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="gpu_seg-cpu")
        barrier = threading.Barrier(self.threads, timeout=10.0)  # one task per thread, all at once
        futures = [self._executor.submit(barrier.wait) for _ in range(self.threads - 1)]
        barrier.wait()
        for future in futures:
            future.result()

    def run(self, task: Callable[[int], None], count: int) -> None:
        """Call ``task(i)`` for every ``i < count``; returns when all are done, re-raising the first error."""
        helpers = min(self.threads, count) - 1
        if helpers <= 0:
            for i in range(count):
                task(i)
            return
        self.start()
        lock = threading.Lock()
        state = {"next": 0, "failed": False}

        def drain() -> None:
            while True:
                with lock:
                    i = state["next"]
                    if i >= count or state["failed"]:
                        return
                    state["next"] = i + 1
                try:
                    task(i)
                except BaseException:
                    state["failed"] = True
                    raise

        futures = [self._executor.submit(drain) for _ in range(helpers)]
        error: BaseException | None = None
        try:
            drain()
        except BaseException as exc:
            error = exc
        for future in futures:
            exc = future.exception()
            if error is None and exc is not None:
                error = exc
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the threads (waits for running tasks); the pool can be used again afterwards."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
