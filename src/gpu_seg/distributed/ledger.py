"""The bookkeeping actor of a distributed run: which worker processes served it, how often each task
was started (a task started twice was retried after its worker died), worker restarts, and what
each worker is running now.

Workers call it synchronously before they start a batch, so a worker killed during a batch has
already counted its tasks, and tell it (without waiting) when the batch is done. It holds a few
integers per task and a line per worker process. It is a named actor (:data:`LEDGER_PREFIX` and
a run id, in the driver's namespace), so that monitoring code (and the tests) can ask it
:meth:`Ledger.in_flight` during a run.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["LEDGER_PREFIX", "Ledger"]

#: Name prefix of the ledger actors (``ray.util.list_named_actors()``).
LEDGER_PREFIX = "gpu_seg-ledger-"


class Ledger:
    """Plain class; the driver runs it as a Ray actor (``ray.remote(num_cpus=0)(Ledger)``)."""

    def __init__(self) -> None:
        self._starts: dict[int, int] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._actors: dict[str, str] = {}
        self._running: dict[str, tuple[list[int], float]] = {}
        self._restarts = 0

    def register(self, worker: str, actor_id: str, info: dict[str, Any]) -> None:
        """A worker process is ready (``info``: its pid, node, device); a new process of a known
        actor counts as a restart."""
        previous = self._actors.get(actor_id)
        if previous is not None and previous != worker:
            self._restarts += 1
        self._actors[actor_id] = worker
        self._workers[worker] = {**info, "actor": actor_id, "ready": time.time()}

    def started(self, worker: str, tasks: list[int]) -> list[int]:
        """``worker`` starts ``tasks`` (task indices of the plan); returns how many times each was
        started, this time included."""
        for task in tasks:
            self._starts[task] = self._starts.get(task, 0) + 1
        self._running[worker] = (list(tasks), time.time())
        return [self._starts[task] for task in tasks]

    def finished(self, worker: str) -> None:
        """``worker`` is done with its batch."""
        self._running.pop(worker, None)

    def in_flight(self) -> dict[str, dict[str, Any]]:
        """Per worker running a batch now: its ``pid``, ``tasks`` and when it started them (``since``)."""
        return {
            worker: {"pid": self._workers.get(worker, {}).get("pid"), "tasks": tasks, "since": since}
            for worker, (tasks, since) in self._running.items()
        }

    def snapshot(self) -> dict[str, Any]:
        """``starts`` (task -> times started), ``workers`` (worker -> info), ``restarts``."""
        return {"starts": dict(self._starts), "workers": dict(self._workers), "restarts": self._restarts}
