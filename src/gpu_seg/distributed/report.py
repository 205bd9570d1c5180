"""What a distributed run did (:class:`RayReport`), and how results become the manifest
(:class:`ResultCollector`: task results arrive in any order, the manifest is written in plan order)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..segmenter.batch import BatchReport, FrameRecord, error_line
from .plan import Task
from .storage import Manifest

__all__ = ["RayReport", "ResultCollector", "WorkerReport"]

log = logging.getLogger("gpu_seg")


@dataclass
class WorkerReport:
    """One worker process (``host:pid``): frames and tasks it completed, seconds it spent in them,
    and the GPU / EGL device it rendered on (None for CPU workers)."""

    frames: int = 0
    tasks: int = 0
    seconds: float = 0.0
    gpu: str | None = None
    egl_device: int | None = None


@dataclass
class RayReport(BatchReport):
    """A :class:`~gpu_seg.segmenter.batch.BatchReport` with the distribution of the work.

    Attributes:
        tasks: tasks planned (images, video frame ranges).
        retries: task runs that were started again after their worker process died.
        restarts: worker processes that replaced a dead one.
        workers: per worker process, what it did.
        startup_seconds: from the start of the run (Ray started or joined included) until the first
            worker was ready to segment.
    """

    tasks: int = 0
    retries: int = 0
    restarts: int = 0
    workers: dict[str, WorkerReport] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def processing_fps(self) -> float:
        """Frames per second once the first worker was ready (Ray's and the workers' start left out)."""
        busy = self.seconds - self.startup_seconds
        return self.frames / busy if busy > 0 else 0.0


class ResultCollector:
    """Turns task result rows into manifest lines, in plan order, and counts them in the report.

    Frames are counted (and ``on_frame`` called) when their task's row arrives; lines are written
    once every earlier task has been written. An input's error line is written once, where its
    first failure stands (a video split into ranges may fail in several); an input is processed
    when all its items came back without error.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        manifest: Manifest,
        report: RayReport,
        on_frame: Callable[[FrameRecord], None] | None = None,
    ) -> None:
        self._tasks = tasks
        self._manifest = manifest
        self._report = report
        self._on_frame = on_frame
        self._arrived: dict[int, list[_Line]] = {}
        self._seen: set[int] = set()
        self._next = 0
        self._failed: set[str] = set()  # output names (one per input) that failed
        self.last_arrival: float | None = None  # time.time() of the last result

    def add(self, row: Mapping[str, Any]) -> None:
        """One result row of :class:`~.worker.SegmentWorker`."""
        index = int(row["task"])
        if index in self._seen:  # Ray hands each result over once; never write a task twice
            log.warning("gpu_seg: result of task %d arrived twice; ignored", index)
            return
        self._seen.add(index)
        self.last_arrival = time.time()
        worker = self._report.workers.setdefault(str(row["worker"]), WorkerReport())
        worker.tasks += 1
        worker.seconds += float(row["seconds"])
        lines: list[_Line] = []
        records: list[FrameRecord] = []
        for name, line in json.loads(str(row["lines"])):
            entry = json.loads(line)
            if "error" in entry:
                lines.append(_Line(name, line, (entry["input"], entry["error"])))
                continue
            lines.append(_Line(name, line))
            records.append(FrameRecord.from_dict(entry))
        self._arrived[index] = lines
        self._write_ready()
        for record in records:  # after the lines are kept: a failing callback loses none of them
            worker.frames += 1
            self._report.add(record)
            if self._on_frame is not None:
                self._on_frame(record)

    def finish(self, reason_for: Callable[[int], str]) -> None:
        """Write what is left; a task that never came back fails its inputs with ``reason_for(task)``."""
        for index in range(self._next, len(self._tasks)):
            lines = self._arrived.pop(index, None)
            if lines is None:
                reason = reason_for(index)
                lines = [
                    _Line(item.name, error_line(item.input, reason), (item.input, reason))
                    for item in self._tasks[index].items
                ]
            self._write(lines)
        self._next = len(self._tasks)
        self._manifest.flush()
        names = {item.name for task in self._tasks for item in task.items}
        self._report.processed = len(names - self._failed)

    def interrupted(self) -> None:
        """The run stops early (Ctrl-C, SIGTERM, a failing ``on_frame``): write the lines of every
        task that came back, the ones waiting for an earlier task too (after the ones in order), so
        that their files, already on disk, are listed. Tasks that did not come back get no line.
        A manifest that cannot be written is logged: the error under way is the one raised."""
        try:
            for index in sorted(self._arrived):
                self._write(self._arrived.pop(index))
            self._manifest.flush()
        except OSError as exc:
            log.error("gpu_seg: the manifest could not be completed after an interrupt: %s", exc)

    def _write_ready(self) -> None:
        while self._next in self._arrived:
            self._write(self._arrived.pop(self._next))
            self._next += 1
        self._manifest.flush()

    def _write(self, lines: list[_Line]) -> None:
        for line in lines:
            if line.failure is not None:
                if line.name in self._failed:
                    continue
                self._failed.add(line.name)
                self._report.failures.append(line.failure)
            self._manifest.write(line.text)


class _Line(NamedTuple):
    """A manifest line of an input (``name``: its output name); ``failure``: ``(input, reason)``
    for an error line."""

    name: str
    text: str
    failure: tuple[str, str] | None = None
