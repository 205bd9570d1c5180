"""Processors in processes made by ``os.fork()`` (see :mod:`gpu_seg.forks`).

A forked child has one thread and a copy of everything else. Before gpu_seg knew about forks, a
processor made before the fork hung in the child on its first frame, on every backend: the GL
thread, the CPU pool's threads and a warm-up holding its lock were all gone. Each test runs a real
fork in a fresh interpreter (a hang is a timeout there, not of the test run) and checks the child
against the numpy reference, the parent after the child, and that the child made no EGL call on
the parent's contexts (every entry point of gpu_seg's libEGL wrapper is wrapped in the child).
"""

from __future__ import annotations

import os

import pytest

from .subprocesses import run_script

if not hasattr(os, "fork"):
    pytest.skip("os.fork is POSIX only", allow_module_level=True)

_PRELUDE = r"""
import gc, json, os, signal, sys, threading, time, weakref
import numpy as np
import gpu_seg
from gpu_seg.gl.egl import bindings

tensor = (np.random.default_rng(7).standard_normal((24, 20, 4)) * 3).astype(np.float32)
SIZE = (96, 80)
want = gpu_seg.reference_postprocess(tensor, "softmax", SIZE)


def exact(result):  # CPU frames: bit-equal to the reference
    return bool(np.array_equal(result.confidence_masks, want.confidence_masks)
                and np.array_equal(result.category_mask, want.category_mask))


def close(result):  # GL frames: as the GL parity tests compare them
    return bool(np.allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
                and np.array_equal(result.category_mask, want.category_mask))


def record_egl_calls():
    calls = []
    lib = bindings._library
    if lib is not None:
        for name in bindings.EGL_PROTOTYPES:
            original = getattr(lib, name)
            def wrapped(*args, _name=name, _original=original):
                calls.append(_name)
                return _original(*args)
            setattr(lib, name, wrapped)
    return calls


def in_child(body):
    # Fork; run body() in the child with a deadline; return what it printed as JSON.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        signal.alarm(30)  # a hang ends the child with SIGALRM
        try:
            report = body()
        except BaseException as exc:
            report = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(report).encode())
        os.close(write)
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child ended with status {status} (14: SIGALRM, it hung)"
    return json.loads(data)
"""

_GL_PROCESSOR = (
    _PRELUDE
    + r"""
backend = sys.argv[1]
pp = gpu_seg.SegmentationPostprocessor(
    "softmax", backend=backend, software_renderer="gl", readback="mapped", gl_passes="fragment"
)
assert close(pp.process(tensor, SIZE)) and pp.stats["gl_frames"] == 1
view = pp.process_view(tensor, SIZE)  # lent mapped memory, held across the fork
pipeline = pp._supervisor.generation.pipeline
pipeline.owned_views = True  # the candidate: an owned result that is a view of mapped memory
owned_view = pp.process(tensor, SIZE)
assert not owned_view.confidence_masks.flags.owndata
pipeline.owned_views = False
software = "llvmpipe" in pipeline.renderer.lower()


def read_in_grandchild(result):
    # "readable" (right bytes), "wrong" (never allowed) or "signal N" (the driver kept the memory from
    # the child: its own business, but never wrong bytes), read in a fork of the child.
    pid = os.fork()
    if pid == 0:
        os._exit(0 if close(result) else 3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return "readable" if os.WEXITSTATUS(status) == 0 else "wrong"
pending = pp.submit(tensor, SIZE)  # a frame in flight on the parent's GL
gl_frames_at_fork = pp.stats["gl_frames"]


def child():
    calls = record_egl_calls()
    seen = []
    pp.on_event = seen.append
    report = {"view": read_in_grandchild(view), "owned_view": read_in_grandchild(owned_view)}
    report["software"] = software
    started = time.monotonic()
    try:
        report["process"] = exact(pp.process(tensor, SIZE))
    except gpu_seg.GpuSegError as exc:
        report["process"] = type(exc).__name__
    report["seconds"] = time.monotonic() - started
    try:
        report["pending"] = exact(pending.result())
    except gpu_seg.GpuSegError as exc:
        report["pending"] = type(exc).__name__
    try:
        got = pp.process_view(tensor, SIZE)
        report["process_view"] = "zero-copy" if got.zero_copy else "copy" if exact(got) else "wrong"
    except gpu_seg.GpuSegError as exc:
        report["process_view"] = type(exc).__name__
    for name, gpu_only in (("process_resident", lambda: pp.process_resident(tensor, SIZE)),
                           ("run_gl", lambda: pp.run_gl(lambda ctx: ctx.version_code))):
        try:
            report[name] = f"returned {gpu_only()!r}"
        except gpu_seg.GpuSegError as exc:
            report[name] = type(exc).__name__
    try:
        with gpu_seg.SegmentationPostprocessor("softmax", backend=backend, software_renderer="gl") as new:
            report["new"] = exact(new.process(tensor, SIZE))
    except gpu_seg.GpuSegError as exc:
        report["new"] = type(exc).__name__
        report["message"] = str(exc)
    report["events"] = [(event.kind.value, event.reason) for event in seen]
    report["fallback_active"] = pp.stats["fallback_active"]
    report["gl_frames_in_child"] = pp.stats["gl_frames"] - gl_frames_at_fork
    pp.close()
    report["closed"] = True
    globals().pop("view")
    gc.collect()
    weakref.finalize._exitfunc()  # what the interpreter's exit runs
    report["egl_calls"] = calls
    return report


report = in_child(child)
report["parent"] = close(pp.process(tensor, SIZE)) and close(view) and close(pending.result())
report["parent"] = report["parent"] and close(owned_view)
report["parent_losses"] = pp.stats["context_losses"]
report["parent_gl_frames"] = pp.stats["gl_frames"]
pp.close()
print(json.dumps(report))
"""
)


def _check_views_read_in_the_child(report: dict) -> None:
    """Views of the parent's mapped memory (a zero-copy view and an owned view) read in the child: the
    right bytes on Mesa (its mapped memory is plain process memory); elsewhere the right bytes or a
    signal (a driver may keep pinned memory from a child), never other bytes."""
    for name in ("view", "owned_view"):
        if report["software"]:
            assert report[name] == "readable", report
        else:
            assert report[name] == "readable" or report[name].startswith("signal"), report
            print(f"{name} read in a forked child: {report[name]}")


def test_an_auto_processor_computes_on_the_cpu_in_a_forked_child():
    """``backend="auto"`` after GL was used in the parent: the child's frames (a new one, one that was in
    flight on the parent's GL, one from a new processor) are exact CPU frames, promptly; a held view of
    the parent's mapped memory still reads its masks; views are copies, as in any CPU fallback; no EGL
    call touches the parent's contexts, even at close and exit; the parent's GL goes on without a loss."""
    report = run_script(_GL_PROCESSOR, "auto")
    assert report.get("error") is None, report
    assert report["process"] is True and report["pending"] is True and report["new"] is True
    assert report["seconds"] < 20, report  # before: hung for gl_timeout (60 s) per attempt
    _check_views_read_in_the_child(report)
    assert report["process_view"] == "copy"  # as in any CPU fallback
    # GPU-only calls have no CPU answer: the error says why (the fork), by its class too
    assert report["process_resident"] == "ForkedProcessError" and report["run_gl"] == "ForkedProcessError"
    assert report["fallback_active"] is True and report["gl_frames_in_child"] == 0
    assert [kind for kind, _ in report["events"]] == ["fallback"], report["events"]
    assert "forked from process" in report["events"][0][1]
    assert report["closed"] is True and report["egl_calls"] == [], report
    assert report["parent"] is True and report["parent_losses"] == 0
    assert report["parent_gl_frames"] >= 3


def test_a_gl_processor_raises_forked_process_error_in_a_forked_child():
    """``backend="gl"``: frames raise ForkedProcessError at once (a GLUnavailableError) with what to do
    instead; a new GL processor too; nothing hangs and the parent keeps its context."""
    report = run_script(_GL_PROCESSOR, "gl")
    assert report.get("error") is None, report
    assert report["process"] == "ForkedProcessError" and report["pending"] == "ForkedProcessError"
    assert report["process_view"] == "ForkedProcessError"
    assert report["process_resident"] == "ForkedProcessError" and report["run_gl"] == "ForkedProcessError"
    assert report["new"] == "ForkedProcessError"
    assert "'spawn'" in report["message"] and "forked from process" in report["message"]
    assert report["seconds"] < 20
    _check_views_read_in_the_child(report)
    assert report["closed"] is True and report["egl_calls"] == [], report
    assert report["parent"] is True and report["parent_losses"] == 0


_CPU_PROCESSOR = (
    _PRELUDE
    + r"""
mode = sys.argv[1]
if mode == "warm-up under way":
    from numba.core.compiler_lock import global_compiler_lock
    from gpu_seg.cpu import _warm
    exercise = _warm.exercise_every_kernel
    def slow():  # inside numba's compiler, as a compilation is: the child cannot take that lock
        with global_compiler_lock:
            time.sleep(1.5)
        exercise()
    _warm.exercise_every_kernel = slow
    from gpu_seg import cpu
    cpu._state["warm"] = False  # a fresh warm-up, slowed, starts with the processor
pp = gpu_seg.SegmentationPostprocessor("softmax", backend="cpu", cpu_threads=2, idle_release_after=0.3)
if mode == "pool used":
    assert exact(pp.process(tensor, SIZE))  # the pool's threads exist in the parent
big = (np.random.default_rng(3).standard_normal((64, 64, 6))).astype(np.float32)


def child():
    report = {"process": exact(pp.process(tensor, SIZE))}
    result = pp.process(big, (512, 640))  # 7.5 MiB of masks: kept for reuse once dropped
    del result
    pp.process(big, (512, 640))
    report["kept_after_frames"] = pp.stats["recycled_bytes_kept"]
    time.sleep(1.0)  # the idle release lets go of the kept memory
    report["kept_when_idle"] = pp.stats["recycled_bytes_kept"]
    pp.close()
    return report


started = time.monotonic()
report = in_child(child)
report["fork_and_child_seconds"] = time.monotonic() - started
report["parent"] = exact(pp.process(tensor, SIZE))
pp.close()
print(json.dumps(report))
"""
)


@pytest.mark.parametrize("mode", ["pool used", "warm-up under way"])
def test_a_cpu_processor_works_in_a_forked_child(mode):
    """The CPU path in a forked child: its pool's threads, the warm-up thread (and the locks it held,
    its own and numba's compiler lock: the fork now waits for a warm-up under way) and the idle watch
    are made anew; frames are exact."""
    report = run_script(_CPU_PROCESSOR, mode)
    assert report.get("error") is None, report
    assert report["process"] is True and report["parent"] is True
    assert report["kept_after_frames"] > 0 and report["kept_when_idle"] == 0, report


_POOL = (
    _PRELUDE
    + r"""
import multiprocessing

pp = gpu_seg.SegmentationPostprocessor("softmax", software_renderer="gl")  # made before the workers
assert close(pp.process(tensor, SIZE)) and pp.stats["gl_frames"] == 1


def work(seed):
    t = (np.random.default_rng(seed).standard_normal((24, 20, 4)) * 3).astype(np.float32)
    got, ref = pp.process(t, SIZE), gpu_seg.reference_postprocess(t, "softmax", SIZE)
    return bool(np.array_equal(got.confidence_masks, ref.confidence_masks)
                and np.array_equal(got.category_mask, ref.category_mask))


signal.alarm(60)
with multiprocessing.get_context("fork").Pool(2, initializer=signal.alarm, initargs=(30,)) as pool:
    results = pool.map(work, range(6))
print(json.dumps({"results": results, "parent": close(pp.process(tensor, SIZE))}))
"""
)


def test_a_processor_made_before_a_fork_pool_serves_its_workers():
    """The common case (multiprocessing's ``fork`` start method, or gunicorn's ``--preload``): a
    processor made at start-up, used by forked workers. Each worker's frames are exact."""
    report = run_script(_POOL)
    assert report == {"results": [True] * 6, "parent": True}


_HOOK_ORDER = r"""
import json, os, sys
import gpu_seg.forks as forks  # first: before anything imports concurrent.futures

import concurrent.futures.thread as pool_threads

seen = []
forks.before_fork(lambda: seen.append(pool_threads._global_shutdown_lock.locked()), lambda token: None)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({"pool_lock_held_in_gpu_seg_hook": seen}))
"""


def test_gpu_segs_fork_hooks_run_before_the_thread_pools():
    """Python runs "before fork" callbacks in reverse order of registration. Where gpu_seg was
    imported before concurrent.futures, the thread pool's callback (which takes its global
    shutdown lock) ran first, and gpu_seg's, waiting for the fast CPU path's warm-up (which submits
    to a pool, so needs that lock), waited out its 120 s: every fork during a warm-up hung."""
    report = run_script(_HOOK_ORDER)
    assert report == {"pool_lock_held_in_gpu_seg_hook": [False]}


_FOREIGN_EGL = (
    _PRELUDE
    + r"""
import moderngl
from gpu_seg.gl.egl.devices import egl_info
from gpu_seg.tools.gl_report import describe_gl

backend = sys.argv[1]
ctx = moderngl.create_standalone_context(backend="egl")  # the application's EGL, not gpu_seg's
fbo = ctx.simple_framebuffer((64, 64))
fbo.use()
ctx.clear(1, 0, 0, 1)
fbo.read()


def child():
    report = {}
    started = time.monotonic()
    try:
        with gpu_seg.SegmentationPostprocessor("softmax", backend=backend, software_renderer="gl") as pp:
            got = pp.process(tensor, SIZE)
            report["process"] = exact(got) and got.backend == "cpu"
    except gpu_seg.GpuSegError as exc:
        report["process"] = type(exc).__name__
    report["seconds"] = time.monotonic() - started
    report["egl_info"] = egl_info().get("error", "")[:80]
    report["describe_gl"] = describe_gl().get("error", "")[:80]
    return report


report = in_child(child)
with gpu_seg.SegmentationPostprocessor("softmax", backend=backend, software_renderer="gl") as pp:
    report["parent"] = close(pp.process(tensor, SIZE)) and pp.stats["gl_frames"] == 1
print(json.dumps(report))
"""
)


@pytest.mark.parametrize("backend", ["auto", "gl"])
def test_egl_loaded_by_another_library_counts_as_inherited(backend):
    """The parent used EGL without gpu_seg (moderngl's own context): a gpu_seg processor made in the child
    hung in llvmpipe before. Now: CPU frames (auto) or ForkedProcessError (gl), at once; ``egl_info`` and
    ``describe_gl`` (``gpu-seg info``) report the reason instead of raising."""
    report = run_script(_FOREIGN_EGL, backend)
    assert report.get("error") is None, report
    assert report["process"] == (True if backend == "auto" else "ForkedProcessError"), report
    assert report["seconds"] < 20
    assert report["egl_info"].startswith("GL cannot be used in process"), report
    assert report["describe_gl"].startswith("GL cannot be used in process"), report
    assert report["parent"] is True


_SEGMENTER = (
    _PRELUDE
    + r"""
from gpu_seg.segmenter import ImageSegmenter

segmenter = ImageSegmenter.create_from_model_path(sys.argv[1], num_threads=2, software_renderer="gl")
image = (np.random.default_rng(1).integers(0, 255, (120, 160, 3))).astype(np.uint8)
want_mask = segmenter.segment(image).category_mask
inside, model = threading.Event(), segmenter._model
run = model.run


def running(fill):
    inside.set()
    return run(fill)


model.run = running
stop = threading.Event()


def segment_until_stopped():  # another thread of the parent, always mid-frame (a threaded server)
    while not stop.is_set():
        segmenter.segment(image)


worker = threading.Thread(target=segment_until_stopped, daemon=True)
worker.start()
inside.wait()


def child():
    results = [segmenter.segment(image) for _ in range(3)]
    report = {"masks": all(np.array_equal(r.category_mask, want_mask) for r in results)}
    segmenter.close()
    return report


report = in_child(child)
stop.set()
worker.join()
report["parent"] = bool(np.array_equal(segmenter.segment(image).category_mask, want_mask))
print(json.dumps(report))
"""
)


_SEGMENTER_IDLE = (
    _PRELUDE
    + r"""
from gpu_seg.segmenter import ImageSegmenter

segmenter = ImageSegmenter.create_from_model_path(sys.argv[1], num_threads=4, backend="cpu")
image = (np.random.default_rng(1).integers(0, 255, (480, 640, 3))).astype(np.uint8)
want_mask = segmenter.segment(image).category_mask
pid = os.fork()
if pid == 0:
    signal.alarm(30)
    ok = all(np.array_equal(segmenter.segment(image).category_mask, want_mask) for _ in range(3))
    segmenter.close()
    gc.collect()
    sys.exit(0 if ok else 3)  # a normal exit: the interpreter's finalisation runs
_, status = os.waitpid(pid, 0)
report = {"child": f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)}
report["parent"] = bool(np.array_equal(segmenter.segment(image).category_mask, want_mask))
print(json.dumps(report))
"""
)


def test_a_segmenter_with_a_thread_pool_is_used_closed_and_left_in_the_child():
    """A segmenter whose LiteRT interpreter has a thread pool (``num_threads=4``), idle at the fork: the
    child's frames are the parent's masks, and closing it and exiting do not crash the child (freeing the
    parent's interpreter there did: SIGSEGV)."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    from .segmenter_support import selfie_model

    assert run_script(_SEGMENTER_IDLE, str(selfie_model())) == {"child": 0, "parent": True}


def test_a_segmenter_busy_in_another_thread_at_the_fork_works_in_the_child():
    """An ``ImageSegmenter`` that another thread of the parent is using at the fork: its locks were held
    in the child for good (a hang), and LiteRT refused to invoke while the gone thread's view of its
    input tensor lived on. Now the child's frames are the parent's masks."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    from .segmenter_support import selfie_model

    report = run_script(_SEGMENTER, str(selfie_model()))
    assert report == {"masks": True, "parent": True}
