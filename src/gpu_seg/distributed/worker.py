"""The Ray Data worker: a callable class for ``Dataset.map_batches`` with an actor pool.

Each actor opens one :class:`~gpu_seg.segmenter.batch.FrameSegmenter` (one ``ImageSegmenter`` per
running mode) when it starts and keeps it across batches. A GPU actor first points
``GPU_SEG_EGL_DEVICE`` at the EGL device of the GPU Ray assigned it (:mod:`.gpus`); a CPU actor
limits llvmpipe (if GL runs there), OpenCV, LiteRT and the fast CPU path to the CPUs it was given.

A batch holds task rows: ``task`` (its index) and ``items`` (JSON: a list of ``[input, source,
name, start, stop]``). The worker writes each item's files itself and returns one row per task:
``task``, ``worker`` (``host:pid``), ``lines`` (JSON: ``[name, manifest line]`` pairs in order: a
line per frame, and an error line for an item that failed) and ``seconds``. Per-input failures
are returned, never raised: only a dead process makes Ray run a task again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

import numpy as np

from ..errors import GpuSegError
from ..postprocessor import BackendChoice
from ..segmenter.batch import FrameSegmenter, WorkItem, error_line, failure_reason
from .gpus import DeviceChoice, assign_egl_device
from .storage import open_output

__all__ = ["RESULT_COLUMNS", "SegmentWorker"]

log = logging.getLogger("gpu_seg")

RESULT_COLUMNS = ("task", "worker", "lines", "seconds")


class SegmentWorker:
    """One Ray actor's segmenter (see the module notes).

    Args:
        model: the ``.tflite`` bytes, or a Ray object reference to them.
        out: the output folder (absolute path) or pyarrow URI (:mod:`.storage`).
        confidence, overlay: as for ``gpu-seg segment``.
        backend: post-processing backend (``"auto"``: GL where a context opens, else the CPU).
        num_threads: LiteRT threads (``None``: the CPUs Ray assigned this actor, at least 1).
        ledger: the run's :class:`~.ledger.Ledger` actor, or None.
        max_retries: a task whose worker process died more often than this (counted by the
            ledger) is not run again but returned failed, so that an input that kills its worker
            every time cannot hold the run up forever (Ray itself retries without limit).
        lose_context_every: fault injection for tests: before every N-th task after the first,
            destroy the real GL context of each post-processor (:func:`gpu_seg.testing.lose_context`).
    """

    def __init__(
        self,
        model: Any,
        out: str,
        *,
        confidence: bool = False,
        overlay: bool = False,
        backend: BackendChoice = "auto",
        num_threads: int | None = None,
        ledger: Any = None,
        max_retries: int = 3,
        lose_context_every: int = 0,
    ) -> None:
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        context = ray.get_runtime_context()
        self.device: DeviceChoice | None = assign_egl_device(ray.get_gpu_ids())
        threads = self._limit_threads(int(context.get_assigned_resources().get("CPU", 1)), num_threads)
        self.engine = FrameSegmenter(
            model,
            open_output(out),
            confidence=confidence,
            overlay=overlay,
            backend=backend,
            num_threads=threads,
            cpu_threads=threads,
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._ledger = ledger
        self._max_retries = max_retries
        self._lose_context_every = lose_context_every
        self._tasks_run = 0
        if ledger is not None:
            info = {
                "pid": os.getpid(),
                "node": context.get_node_id(),
                "gpu": self.device.gpu_id if self.device else None,
                "egl_device": self.device.egl_device if self.device else None,
            }
            ray.get(ledger.register.remote(self.worker_id, context.get_actor_id(), info))

    def _limit_threads(self, cpus: int, num_threads: int | None) -> int:
        """LiteRT's, OpenCV's and the fast CPU path's threads (and llvmpipe's on a CPU worker) for the
        CPUs Ray gave this worker (its process may run on any of the machine's)."""
        threads = num_threads if num_threads is not None else max(1, cpus)
        if self.device is None:
            os.environ.setdefault("LP_NUM_THREADS", str(max(1, cpus)))  # llvmpipe, when GL runs on CPUs
        import cv2

        cv2.setNumThreads(threads)
        return threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [int(t) for t in batch["task"]]
        attempts = [1] * len(tasks)
        if self._ledger is not None:
            import ray

            attempts = ray.get(self._ledger.started.remote(self.worker_id, tasks))
        columns: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
        for row, task in enumerate(tasks):
            start = time.perf_counter()
            items = [WorkItem(i, n, a, b, source=s) for i, s, n, a, b in json.loads(str(batch["items"][row]))]
            if attempts[row] > self._max_retries + 1:
                reason = _given_up(attempts[row] - 1, self._max_retries)
                lines = [(item.name, error_line(item.input, reason)) for item in items]
            else:
                self._inject_faults()
                lines = [line for item in items for line in self._run(item)]
            columns["task"].append(task)
            columns["worker"].append(self.worker_id)
            columns["lines"].append(json.dumps(lines))
            columns["seconds"].append(time.perf_counter() - start)
        if self._ledger is not None:
            self._ledger.finished.remote(self.worker_id)  # ordered before this worker's next call
        return {name: np.asarray(values) for name, values in columns.items()}

    def _run(self, item: WorkItem) -> list[tuple[str, str]]:
        """``(name, manifest line)`` per frame written, and an error line if the item failed."""
        lines: list[tuple[str, str]] = []
        try:
            for record in self.engine.run(item):
                lines.append((item.name, record.to_json()))
        except Exception as exc:  # this input failed (a bug too: logged); the worker goes on
            lines.append((item.name, error_line(item.input, failure_reason(item.input, exc))))
        return lines

    def _inject_faults(self) -> None:
        self._tasks_run += 1
        every = self._lose_context_every
        if every <= 0 or self._tasks_run == 1 or (self._tasks_run - 1) % every:
            return
        from ..testing import lose_context

        for segmenter in self.engine.segmenters:
            try:
                lose_context(segmenter.postprocessor)
            except GpuSegError as exc:  # no live owned context right now (CPU backend, fallback)
                log.info("gpu_seg: no context to lose in %s: %s", self.worker_id, exc)

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def _given_up(deaths: int, max_retries: int) -> str:
    return (
        f"WorkerLost: the worker process died each of the {deaths} times its task ran "
        f"(max_retries={max_retries}); this input may not have been reached"
    )
