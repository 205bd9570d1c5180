"""A distributed run's plan: inputs -> output names -> tasks (an image, or a range of a video's frames).

Names are chosen exactly as the single-process engine chooses them
(:func:`gpu_seg.segmenter.batch.output_names`), so both write the same files. A video whose
container announces more than ``frames_per_task`` frames is split into ranges of that many frames
(the last range reads to the end, whatever the count said), so that long videos spread over the
workers. Every task carries its position in the run: the manifest is written in that order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..segmenter.batch import WorkItem, is_video, output_names, video_frame_count

__all__ = ["DEFAULT_FRAMES_PER_TASK", "Task", "plan_tasks"]

#: Video frames per task unless told otherwise: big enough that a task's fixed costs (a Ray call,
#: opening and seeking the video) stay small, small enough to spread a minute of video.
DEFAULT_FRAMES_PER_TASK = 64


@dataclass(frozen=True)
class Task:
    """One unit of work of a run.

    Attributes:
        index: position in the run; the manifest lists the tasks' frames in this order.
        item: the input, its output name and, for a video, the frame range.
        frames: the frames expected (1 for an image; from the container's count for a video).
    """

    index: int
    item: WorkItem
    frames: int


def plan_tasks(
    inputs: Sequence[str | os.PathLike[str]],
    frames_per_task: int = DEFAULT_FRAMES_PER_TASK,
    taken: set[str] | None = None,
) -> list[Task]:
    """The tasks for ``inputs`` (files, in run order; see :func:`~gpu_seg.segmenter.batch.find_inputs`).

    Args:
        inputs: the input files.
        frames_per_task: the most frames a video task reads (a positive integer).
        taken: output names already used in the output folder's earlier runs (updated).

    Raises:
        InputError("frames_per_task"): not a positive integer.
    """
    if isinstance(frames_per_task, bool) or not isinstance(frames_per_task, int) or frames_per_task < 1:
        raise InputError("frames_per_task", f"expected a positive integer, got {frames_per_task!r}")
    paths = [str(Path(p)) for p in inputs]
    tasks: list[Task] = []
    for path, name in zip(paths, output_names(paths, taken), strict=True):
        count = video_frame_count(path) if is_video(path) else 1
        for start, stop in _ranges(count, frames_per_task):
            frames = (stop if stop is not None else max(count, start + 1)) - start
            item = WorkItem(path, name, start, stop, source=str(Path(path).absolute()))
            tasks.append(Task(len(tasks), item, frames))
    return tasks


def _ranges(count: int, size: int) -> list[tuple[int, int | None]]:
    """``[start, stop)`` ranges covering ``count`` frames, ``size`` at most; the last is open-ended."""
    chunks = max(1, math.ceil(count / size))
    return [(k * size, (k + 1) * size if k < chunks - 1 else None) for k in range(chunks)]
