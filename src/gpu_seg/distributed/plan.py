"""A distributed run's plan: inputs -> output names -> tasks (a few images, or a range of a video's frames).

Names are chosen exactly as the single-process engine chooses them
(:func:`gpu_seg.segmenter.files.output_names`), so both write the same files. A video whose
container announces more than ``frames_per_task`` frames is split into ranges of that many frames
(the last range reads to the end, whatever the count said), so that long videos spread over the
workers. Consecutive images are grouped, ``images_per_task`` at most, so that the fixed cost of a
task (a Ray call, a block of Ray Data) is shared. Every task carries its position in the run: the
manifest is written in that order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..segmenter.batch import WorkItem
from ..segmenter.files import is_video, output_names, video_frame_count

__all__ = [
    "DEFAULT_FRAMES_PER_TASK",
    "MAX_IMAGES_PER_TASK",
    "Task",
    "check_task_sizes",
    "images_per_task",
    "plan_tasks",
]

#: Video frames per task unless told otherwise: big enough that a task's fixed costs (a Ray call,
#: opening and seeking the video) stay small, small enough to spread a minute of video.
DEFAULT_FRAMES_PER_TASK = 64
#: The most images grouped into one task by default (see :func:`images_per_task`): as many frames as a
#: video task; measured on 2 cores, 16-image tasks lost a quarter of the throughput to Ray's per-task
#: work (messages, blocks) that 64-image tasks mostly avoid.
MAX_IMAGES_PER_TASK = 64


@dataclass(frozen=True)
class Task:
    """One unit of work of a run.

    Attributes:
        index: position in the run; the manifest lists the tasks' frames in this order.
        items: the work items, in run order: consecutive images, or one range of a video.
        frames: the frames expected (1 per image; from the container's count for a video).
    """

    index: int
    items: tuple[WorkItem, ...]
    frames: int


def images_per_task(images: int, workers: int) -> int:
    """Images grouped per task: at least 4 tasks per worker, at most :data:`MAX_IMAGES_PER_TASK` images."""
    return max(1, min(MAX_IMAGES_PER_TASK, math.ceil(images / (4 * max(1, workers)))))


def check_task_sizes(frames_per_task: object, images_per_task: object) -> None:
    """Raise InputError naming the argument unless both are positive integers."""
    for name, value in (("frames_per_task", frames_per_task), ("images_per_task", images_per_task)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(name, f"expected a positive integer, got {value!r}")


def plan_tasks(
    inputs: Sequence[str | os.PathLike[str]],
    frames_per_task: int = DEFAULT_FRAMES_PER_TASK,
    images_per_task: int = 1,
    taken: set[str] | None = None,
) -> list[Task]:
    """The tasks for ``inputs`` (files, in run order; see :func:`~gpu_seg.segmenter.files.find_inputs`).

    Args:
        inputs: the input files.
        frames_per_task: the most frames a video task reads (a positive integer).
        images_per_task: the most consecutive images grouped into one task.
        taken: output names already used in the output folder's earlier runs (updated).

    Raises:
        InputError("frames_per_task" or "images_per_task"): not a positive integer.
    """
    check_task_sizes(frames_per_task, images_per_task)
    paths = [str(Path(p)) for p in inputs]
    tasks: list[Task] = []
    images: list[WorkItem] = []

    def close(items: list[WorkItem], frames: int) -> None:
        if items:
            tasks.append(Task(len(tasks), tuple(items), frames))

    for path, name in zip(paths, output_names(paths, taken), strict=True):
        source = str(Path(path).absolute())
        if not is_video(path):
            images.append(WorkItem(path, name, source=source))
            if len(images) == images_per_task:
                close(images, len(images))
                images = []
            continue
        close(images, len(images))
        images = []
        count = video_frame_count(path)
        for start, stop in _ranges(count, frames_per_task):
            frames = (stop if stop is not None else max(count, start + 1)) - start
            close([WorkItem(path, name, start, stop, source=source)], frames)
    close(images, len(images))
    return tasks


def _ranges(count: int, size: int) -> list[tuple[int, int | None]]:
    """``[start, stop)`` ranges covering ``count`` frames, ``size`` at most; the last is open-ended."""
    chunks = max(1, math.ceil(count / size))
    return [(k * size, (k + 1) * size if k < chunks - 1 else None) for k in range(chunks)]
