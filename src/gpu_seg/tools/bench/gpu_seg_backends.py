"""gpu_seg's own bench rows: the GL path (with and without preallocated outputs, as zero-copy views
(``gl_view``), as frames in flight (``gl_async``: chains of :data:`ASYNC_CHAIN` frames, two queued
at a time, milliseconds per frame), and the f16, u8 and one-channel confidence variants), the fast
CPU path (``cpu``: a processor with ``backend="cpu"``) and
the numpy reference (``reference``: the specification, as 0.1's CPU fallback ran it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import reference
from ...inputs import make_frame
from ...postprocessor import SegmentationPostprocessor
from ..messages import first_line
from .cases import MODES, BenchCase
from .runner import BACKENDS, VARIANTS, BackendUnavailableError, Runner

__all__ = ["GPU_SEG_BACKENDS", "ProcessorPool", "gpu_seg_runner"]

#: The backend keys this module prepares.
GPU_SEG_BACKENDS = ("gl", "gl_alloc", "gl_view", "gl_async", "cpu", "reference", *VARIANTS)
#: Frames per timed call of ``gl_async``.
ASYNC_CHAIN = 6


class ProcessorPool:
    """gpu_seg processors, one per configuration, shared by the runners of a cell.

    :meth:`close` releases them; a GL start-up failure is remembered across :meth:`close`, so an
    unavailable GL is not retried for every cell.
    """

    def __init__(self) -> None:
        self._processors: dict[tuple, SegmentationPostprocessor] = {}
        self.gl_error: str | None = None

    def get(
        self, backend: str, activation: str, mode: str, options: dict[str, Any] | None = None
    ) -> SegmentationPostprocessor:
        options = options or {}
        key = (backend, activation, mode, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key in self._processors:
            return self._processors[key]
        if backend == "gl" and self.gl_error is not None:
            raise BackendUnavailableError(self.gl_error)
        conf, cat = MODES[mode]
        try:
            processor = SegmentationPostprocessor(
                activation,
                output_confidence_masks=conf,
                output_category_mask=cat,
                backend=backend,  # type: ignore[arg-type]
                **options,
            )
        except Exception as exc:
            if backend == "gl" and not options:
                self.gl_error = f"GL unavailable: {first_line(exc)}"
                raise BackendUnavailableError(self.gl_error) from exc
            raise BackendUnavailableError(first_line(exc)) from exc
        self._processors[key] = processor
        return processor

    def close(self) -> None:
        for processor in self._processors.values():
            processor.close()
        self._processors.clear()


def gpu_seg_runner(pool: ProcessorPool, key: str, case: BenchCase, mode: str) -> Runner:
    """Prepare gpu_seg backend ``key`` (one of :data:`GPU_SEG_BACKENDS`) for ``case`` in ``mode``.

    Every key but ``gl_alloc`` writes into preallocated outputs. One untimed frame runs here: it
    checks that the frame ran where it should (GL, not a CPU fallback).
    """
    if key == "reference":
        return _reference_runner(case, mode)
    if key in ("gl_view", "gl_async"):
        return _lending_runner(pool, key, case, mode)
    backend = "cpu" if key == "cpu" else "gl"
    options = VARIANTS.get(key, {})
    channels = options.get("confidence_channels")
    if channels is not None and case.channels < 2:
        raise BackendUnavailableError("a channel subset needs at least two channels")
    processor = pool.get(backend, case.activation, mode, options)
    conf, cat = MODES[mode]
    width, height = case.output_size
    planes = len(channels) if channels is not None else case.channels
    preallocate = key != "gl_alloc"
    dtype = np.dtype(options.get("confidence_dtype", "float32"))
    conf_out = np.empty((planes, height, width), dtype) if conf and preallocate else None
    cat_out = np.empty((height, width), np.uint8) if cat and preallocate else None
    tensor, size = case.tensor, case.output_size
    last: dict[str, Any] = {}

    def call() -> None:
        last["result"] = processor.process(tensor, size, confidence_out=conf_out, category_out=cat_out)

    try:
        call()
    except Exception as exc:
        raise BackendUnavailableError(first_line(exc)) from exc
    result = last["result"]
    if result.backend != backend:
        raise BackendUnavailableError(f"the frame ran on {result.backend!r}, not {backend!r}")
    bytes_out = sum(a.nbytes for a in (result.confidence_masks, result.category_mask) if a is not None)
    return Runner(
        key,
        BACKENDS[key],
        call,
        lambda: (last["result"].confidence_masks, last["result"].category_mask),
        bytes_out,
        channels=tuple(channels) if channels is not None else None,
    )


def _reference_runner(case: BenchCase, mode: str) -> Runner:
    """The numpy reference into preallocated outputs (validated once, like the processor does)."""
    conf, cat = MODES[mode]
    frame = make_frame(case.tensor, case.activation, case.output_size, confidence=conf, category=cat)
    conf_out, cat_out = frame.allocate_confidence(), frame.allocate_category()

    def call() -> None:
        reference.compute(frame, conf_out, cat_out)

    bytes_out = sum(a.nbytes for a in (conf_out, cat_out) if a is not None)
    return Runner("reference", BACKENDS["reference"], call, lambda: (conf_out, cat_out), bytes_out)


def _lending_runner(pool: ProcessorPool, key: str, case: BenchCase, mode: str) -> Runner:
    """``gl_view`` (process_view, released each frame) or ``gl_async`` (frames in flight)."""
    processor = pool.get("gl", case.activation, mode, {"readback": "mapped"})
    tensor, size = case.tensor, case.output_size
    last: dict[str, Any] = {}

    def view() -> None:
        previous = last.pop("view", None)
        if previous is not None:
            previous.release()
        last["view"] = processor.process_view(tensor, size)

    def chain() -> None:
        queued = [processor.submit(tensor, size), processor.submit(tensor, size)]
        for _ in range(ASYNC_CHAIN - 2):
            last["result"] = queued.pop(0).result()
            queued.append(processor.submit(tensor, size))
        for pending in queued:
            last["result"] = pending.result()

    call = view if key == "gl_view" else chain
    try:
        call()
    except Exception as exc:
        raise BackendUnavailableError(first_line(exc)) from exc
    result = last["view"] if key == "gl_view" else last["result"]
    if result.backend != "gl":
        raise BackendUnavailableError(f"the frame ran on {result.backend!r}, not 'gl'")

    def outputs():
        done = last["view"] if key == "gl_view" else last["result"]
        return done.confidence_masks, done.category_mask

    masks = outputs()
    bytes_out = sum(a.nbytes for a in masks if a is not None)
    note = "" if key == "gl_async" or result.zero_copy else "not zero-copy here (direct readback)"
    return Runner(
        key,
        BACKENDS[key],
        call,
        outputs,
        bytes_out,
        note=note,
        frames_per_call=ASYNC_CHAIN if key == "gl_async" else 1,
    )
