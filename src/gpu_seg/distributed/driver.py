"""``segment_on_ray``: the single-process ``gpu-seg segment`` run by a pool of Ray actors.

The driver plans the tasks (:mod:`.plan`), starts or joins Ray (:mod:`.session`), feeds the tasks
to ``Dataset.map_batches`` with an actor pool of :class:`~.worker.SegmentWorker`, and writes the
manifest from the results (:mod:`.report`). Workers write the mask files themselves, into the
output folder or URI (:mod:`.storage`).

Faults: Ray restarts a worker process that dies (killed, out of memory, node lost) and runs its
unfinished tasks again, up to ``max_retries`` times each; files are written whole, so a rerun task
leaves the same files. A task that still fails fails its input: the manifest gets an error line
for it, the report lists it, and the run goes on with the rest.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..models import model_bytes
from ..postprocessor import BackendChoice
from ..segmenter.batch import FrameRecord
from ..segmenter.files import find_inputs, is_video
from ..segmenter.segmenter import check_model_options
from .ledger import LEDGER_PREFIX, Ledger
from .plan import DEFAULT_FRAMES_PER_TASK, Task, check_task_sizes, plan_tasks
from .plan import images_per_task as default_images_per_task
from .report import RayReport, ResultCollector
from .session import data_settings, import_ray, ray_session
from .storage import Manifest, is_uri, open_output, output_label
from .worker import SegmentWorker

__all__ = ["Pool", "check_pool_fits", "segment_on_ray"]

log = logging.getLogger("gpu_seg")

#: Tasks Ray Data queues on one actor ahead of the running one (hides the hand-over, keeps the
#: work balanced at the end of a run and little work to redo when an actor dies).
TASKS_IN_FLIGHT_PER_WORKER = 2


def segment_on_ray(
    inputs: Sequence[str | os.PathLike[str]] | Any,
    out: str | os.PathLike[str],
    *,
    model: bytes | str | os.PathLike[str] | None = None,
    confidence: bool = False,
    overlay: bool = False,
    backend: BackendChoice = "auto",
    num_threads: int | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    frames_per_task: int = DEFAULT_FRAMES_PER_TASK,
    images_per_task: int | None = None,
    max_retries: int = 3,
    address: str | None = None,
    ray_options: Mapping[str, Any] | None = None,
    on_frame: Callable[[FrameRecord], None] | None = None,
    lose_context_every: int = 0,
) -> RayReport:
    """Segment images and videos on a Ray cluster; same files and manifest as ``gpu-seg segment``.

    Args:
        inputs: files and folders (searched as by the single-process command), or a Ray Dataset
            whose rows hold a ``path`` column (or a single column) of them.
        out: the output folder (on a cluster: one every machine mounts at that path), or a
            pyarrow filesystem URI (``s3://bucket/prefix``).
        model: ``.tflite`` bytes or path (default: MediaPipe's selfie model).
        confidence, overlay: also write ``.confidence.npy`` / ``.overlay.png``.
        backend: post-processing backend of every worker (``"auto"``: GL where a context opens,
            else the CPU; ``"cpu"``; ``"gl"``).
        num_threads: LiteRT threads per worker (default: its CPUs).
        workers: actors in the pool; cpus_per_worker, gpus_per_worker: Ray resources of each (a
            GPU worker renders on the EGL device of the GPU Ray assigned it; fractions share a GPU).
        frames_per_task: video frames per task (longer videos are split into ranges).
        images_per_task: consecutive images per task (default: at least 4 tasks per worker, at
            most 64 images).
        max_retries: times a task is rerun after its worker process died.
        address: the Ray cluster to join (None: start a local Ray for the run; ignored when Ray is
            already initialised in this process).
        ray_options: more ``ray.init`` keywords.
        on_frame: called in this process for every frame, as its task's result arrives.
        lose_context_every: fault injection (tests): each worker destroys its GL contexts before
            every N-th task.

    Returns:
        A :class:`~.report.RayReport`; ``report.ok`` is False when any input failed for good.

    Raises:
        InputError: a bad option. RayUnavailableError: Ray is not installed. GpuSegError: the
            model cannot be read.
    """
    pool = Pool(workers, cpus_per_worker, gpus_per_worker, max_retries)
    check_task_sizes(frames_per_task, 1 if images_per_task is None else images_per_task)
    if (
        isinstance(lose_context_every, bool)
        or not isinstance(lose_context_every, int)
        or lose_context_every < 0
    ):
        raise InputError("lose_context_every", f"expected an integer >= 0, got {lose_context_every!r}")
    model_data = model_bytes(model)
    check_model_options(model_data, backend, num_threads)  # what every worker would refuse, once
    output = open_output(out)  # InputError("out") before Ray starts
    started = time.time()
    started_here = address is None and not import_ray(local=True).is_initialized()
    with ray_session(address, ray_options) as ray:
        check_pool_fits(ray, pool, must_fit=started_here)
        files = find_inputs(_paths(inputs), output_folders=[] if is_uri(out) else [out])
        if images_per_task is None:
            images_per_task = default_images_per_task(sum(not is_video(f) for f in files), workers)
        taken = output.names_in_use()  # earlier runs' outputs are never overwritten
        tasks = plan_tasks(files, frames_per_task, images_per_task, taken)
        report = RayReport(inputs=len(files), tasks=len(tasks))
        ledger = ray.remote(num_cpus=0)(Ledger).options(name=LEDGER_PREFIX + uuid.uuid4().hex[:12]).remote()
        options = {
            "confidence": confidence,
            "overlay": overlay,
            "backend": backend,
            "num_threads": num_threads,
            "lose_context_every": lose_context_every,
        }
        try:
            book, ended = _run_pool(ray, tasks, out, model_data, pool, ledger, report, on_frame, options)
        finally:
            ray.kill(ledger)
    _account(report, book, started, ended)
    return report


def _run_pool(
    ray: Any,
    tasks: Sequence[Task],
    out: str | os.PathLike[str],
    model_data: bytes,
    pool: Pool,
    ledger: Any,
    report: RayReport,
    on_frame: Callable[[FrameRecord], None] | None,
    options: dict[str, Any],
) -> tuple[Mapping[str, Any], float]:
    """Run the tasks on the actor pool and write the manifest; returns the ledger's book and when
    the last result arrived. Interrupted (Ctrl-C, SIGTERM, a failing ``on_frame``), the results
    that came back are written before the error goes on."""
    worker_options = {
        "model": ray.put(model_data),
        "out": output_label(out),
        "ledger": ledger,
        "max_retries": pool.max_retries,
        **options,
    }
    with Manifest(out) as manifest, data_settings():
        collector = ResultCollector(tasks, manifest, report, on_frame)
        rows = iter(_pipeline(ray, tasks, worker_options, pool).iter_rows()) if tasks else iter(())
        try:
            failure = _collect(rows, collector)
        except BaseException:
            collector.interrupted()
            _stop(rows)  # a Ray that outlives the run (the caller's) must not go on with the tasks
            raise
        ended = collector.last_arrival or time.time()
        book = ray.get(ledger.snapshot.remote())
        collector.finish(lambda index: _lost_reason(book["starts"].get(index, 0), pool.max_retries, failure))
    return book, ended


@dataclass(frozen=True)
class Pool:
    """The actor pool of a run (see :func:`segment_on_ray` for the fields)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        for name, minimum in (("workers", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InputError(name, f"expected an integer >= {minimum}, got {value!r}")
        for name in ("cpus_per_worker", "gpus_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise InputError(name, f"expected a finite number >= 0, got {value!r}")
        gpus = self.gpus_per_worker
        if gpus > 1 and gpus != int(gpus):
            raise InputError("gpus_per_worker", f"a worker takes part of one GPU or whole GPUs, not {gpus}")


def _pipeline(ray: Any, tasks: Sequence[Task], worker_options: dict[str, Any], pool: Pool) -> Any:
    """The lazy Dataset of result rows: task rows -> ``map_batches(SegmentWorker)`` on an actor pool."""
    rows = [
        {
            "task": task.index,
            "items": json.dumps([[i.input, i.path, i.name, i.start, i.stop] for i in task.items]),
        }
        for task in tasks
    ]
    dataset = ray.data.from_items(rows, **{_blocks_keyword(ray.data.from_items): len(rows)})
    # Ray Data's actors are restarted after they die and their tasks rerun, without limit; the
    # worker gives up on a task itself after max_retries deaths (see SegmentWorker).
    return dataset.map_batches(
        SegmentWorker,
        fn_constructor_kwargs=worker_options,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=pool.workers, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT_PER_WORKER
        ),
        num_cpus=pool.cpus_per_worker,
        num_gpus=pool.gpus_per_worker or None,
    )


def _collect(rows: Iterator[Any], collector: ResultCollector) -> str:
    """Feed the result rows to the collector; returns why Ray Data stopped early ("" if it did not).
    What the collector raises (a failing ``on_frame``, the manifest) is raised."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return ""
        except Exception as exc:  # Ray Data gave up on the run: what did not come back is reported failed
            return f"{type(exc).__name__}: {exc}"
        collector.add(row)


def _stop(rows: Iterator[Any]) -> None:
    """End the Ray Data execution behind ``rows`` (closing its iterator shuts its executor down)."""
    close = getattr(rows, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:  # the error under way is the one to report
            log.warning("gpu_seg: stopping the Ray Data execution: %s", exc)


def check_pool_fits(ray: Any, pool: Pool, must_fit: bool) -> None:
    """Whether some live node can hold one worker (its CPUs and GPUs); Ray Data would wait for good.

    Raises:
        InputError("cpus_per_worker" or "gpus_per_worker"): no node can, and ``must_fit`` (a local
            Ray started for the run: nothing will join it). On a cluster an autoscaler may add such
            a node: a warning is logged, and the run waits for it.
    """
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    cpus, gpus = pool.cpus_per_worker, pool.gpus_per_worker
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    have = "; ".join(f"{n.get('CPU', 0):g} CPUs, {n.get('GPU', 0):g} GPUs" for n in nodes) or "none"
    gpu_short = gpus and not any(n.get("GPU", 0) >= gpus for n in nodes)
    message = f"one worker needs {cpus:g} CPUs and {gpus:g} GPUs; no node has them (nodes: {have})"
    if must_fit:
        raise InputError("gpus_per_worker" if gpu_short else "cpus_per_worker", message)
    log.warning("gpu_seg: %s; waiting for the cluster to add such a node", message)


def _blocks_keyword(from_items: Callable[..., Any]) -> str:
    """``override_num_blocks`` (Ray >= 2.10), formerly ``parallelism``."""
    parameters = inspect.signature(from_items).parameters
    return "override_num_blocks" if "override_num_blocks" in parameters else "parallelism"


def _lost_reason(starts: int, max_retries: int, failure: str) -> str:
    if starts:
        return (
            f"WorkerLost: the worker process died while running it ({starts} attempts; "
            f"max_retries={max_retries}){': ' + failure if failure else ''}"
        )
    return f"NotRun: {failure or 'Ray Data dropped its task'}"


def _account(report: RayReport, book: Mapping[str, Any], started: float, ended: float) -> None:
    """Fill in times, retries and workers; ``ended``: when the last result arrived."""
    report.seconds = ended - started
    report.retries = sum(max(0, count - 1) for count in book["starts"].values())
    report.restarts = int(book["restarts"])
    ready = [info["ready"] for info in book["workers"].values()]
    if ready:
        report.startup_seconds = min(ready) - started
    for worker, info in book["workers"].items():
        entry = report.workers.get(worker)
        if entry is not None:
            entry.gpu, entry.egl_device = info.get("gpu"), info.get("egl_device")


def _paths(inputs: Sequence[str | os.PathLike[str]] | Any) -> list[str | os.PathLike[str]]:
    """The input paths: a list as given, or the ``path`` column (or only column) of a Ray Dataset,
    in the Dataset's order (read with its ``preserve_order`` on)."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if not (hasattr(inputs, "iter_rows") and hasattr(inputs, "columns")):
        return list(inputs)
    columns = inputs.columns()
    if "path" not in columns and len(columns) != 1:
        raise InputError("inputs", f"a Dataset of inputs needs a 'path' column; it has {columns}")
    column = "path" if "path" in columns else columns[0]
    context = getattr(inputs, "context", None)  # the DataContext the Dataset was made with
    if context is None:
        from ray.data import DataContext

        context = DataContext.get_current()
    options = context.execution_options
    saved, options.preserve_order = options.preserve_order, True
    try:
        return [str(row[column]) for row in inputs.select_columns([column]).iter_rows()]
    finally:
        options.preserve_order = saved
