"""Context loss on real EGL contexts: detection, rebuild, recompute, budget, fallback, threads, hangs."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import threading
import time

import numpy as np
import pytest

import gpu_seg
from gpu_seg import testing
from gpu_seg.gl import egl
from gpu_seg.gl.pipeline import GLPipeline
from gpu_seg.gl.programs import ProgramCache, ProgramDefinition
from gpu_seg.resilience import LossBudget, RecoveryPolicy

from .process_memory import check_rss_growth, python_memory_kept
from .subprocesses import run_script

SIZE = (37, 29)


def _tensor(seed: int, shape=(12, 10, 5)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(np.float32)


def _assert_correct(result, tensor, activation="softmax", size=SIZE):
    want = gpu_seg.reference_postprocess(tensor, activation, size)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


class Recorder:
    def __init__(self) -> None:
        self.events: list[gpu_seg.Event] = []

    def __call__(self, event: gpu_seg.Event) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def make_pp(recorder, new_processor):
    return functools.partial(new_processor, on_event=recorder)


def test_lose_context_then_next_frame_rebuilds_and_recomputes(make_pp, recorder):
    pp = make_pp()
    first = pp.process(_tensor(1), SIZE)
    assert first.backend == "gl"
    baseline = pp.live_gl_objects()
    testing.lose_context(pp)
    tensor = _tensor(2)
    result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert recorder.kinds == ["context_lost", "rebuilt"]
    lost = recorder.events[0]
    assert lost.generation == 1 and "EGL_BAD_CONTEXT" in lost.reason and lost.time > 0
    stats = pp.stats
    assert stats["context_losses"] == 1 and stats["rebuilds"] == 1 and stats["generation"] == 2
    assert stats["frames"] == 2 and stats["gl_frames"] == 2 and stats["cpu_frames"] == 0
    assert pp.live_gl_objects() == baseline


def test_seed_scenario_mediapipe_failure_mode(make_pp, recorder):
    """Lost between frames; the next frame needs programs MediaPipe would build on the dead context.

    MediaPipe fails here for good ("Problem initializing the activation program"). gpu_seg reports
    the loss, rebuilds on a new context and returns correct masks for that very frame.
    """
    pp = make_pp()
    pp.process(_tensor(3, (8, 8, 3)), SIZE)
    builds_before = pp.stats["program_builds"]
    testing.lose_context(pp)
    tensor = _tensor(4, (16, 12, 7))  # a new shape: new programs must be built
    result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert recorder.kinds == ["context_lost", "rebuilt"]
    assert pp.stats["program_builds"] > builds_before


def test_program_build_on_a_destroyed_context_is_classified_as_loss():
    """The exact MediaPipe situation, one level down: link a program on a destroyed context."""
    import moderngl

    context = egl.create_context(egl.open_display())
    context.make_current()
    ctx = moderngl.create_context(standalone=True, require=330, context=context.loader())

    def lost_reason():
        return None if context.is_valid() and context.is_current() else "context destroyed"

    cache = ProgramCache(ctx, 1, 400 if ctx.version_code >= 400 else 330, lost_reason)
    pipeline = GLPipeline(ctx, cache)
    definition = ProgramDefinition.of(
        "fullscreen.vert.glsl", "softmax_stats.frag.glsl", TENSOR_W=4, TENSOR_H=4, CHANNELS=3, LANES=4,
        GROUPS=1, LINE=4, WRAPPED=False,
    )  # fmt: skip
    context.release_current()
    egl.library().eglDestroyContext(context.display.handle, context.handle)
    with pytest.raises(gpu_seg.ContextLostError) as info:
        cache.get(definition)
    assert not isinstance(info.value, gpu_seg.ShaderBuildError)
    assert cache.counters.link_failures == 1
    pipeline.abandon()


def test_context_destroyed_from_outside_the_library(make_pp, recorder):
    pp = make_pp()
    pp.process(_tensor(5), SIZE)
    handle = pp._supervisor.generation.session.egl_context  # the test reaches in; the library is not told
    assert egl.library().eglDestroyContext(handle.display.handle, handle.handle)
    tensor = _tensor(6)
    result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert recorder.kinds == ["context_lost", "rebuilt"]


def test_injected_link_failures_count_as_losses(make_pp, recorder):
    pp = make_pp()
    pp.process(_tensor(7), SIZE)
    testing.fail_next_links(pp, 2)
    testing.lose_context(pp)
    tensor = _tensor(8)
    result = pp.process(tensor, SIZE)
    _assert_correct(result, tensor)
    assert result.backend == "gl"
    assert recorder.kinds == ["context_lost", "context_lost", "context_lost", "rebuilt"]
    assert pp.stats["link_failures"] == 2


def test_budget_exhausted_auto_falls_back_to_cpu_then_returns(make_pp, recorder):
    clock_now = [0.0]
    policy = RecoveryPolicy(budget=LossBudget(capacity=1), reprobe_interval=10.0, clock=lambda: clock_now[0])
    pp = make_pp(policy=policy)
    pp.process(_tensor(9), SIZE)
    testing.lose_context(pp)
    assert pp.process(_tensor(10), SIZE).backend == "gl"  # within budget: rebuilt
    testing.lose_context(pp)
    tensor = _tensor(11)
    result = pp.process(tensor, SIZE)  # budget exhausted: this frame goes to the CPU
    assert result.backend == "cpu"
    _assert_correct(result, tensor)
    assert pp.stats["fallback_active"] is True
    assert recorder.kinds == ["context_lost", "rebuilt", "context_lost", "fallback"]
    assert pp.live_gl_objects() == 0
    assert pp.process(tensor, SIZE).backend == "cpu"  # re-probe not due yet
    clock_now[0] += 10.0
    result = pp.process(tensor, SIZE)
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert recorder.kinds[-1] == "gpu_restored" and pp.stats["fallback_active"] is False
    assert pp.stats["cpu_frames"] == 2 and pp.stats["gl_frames"] == 3


def test_budget_exhausted_gl_backend_raises(make_pp):
    pp = make_pp(backend="gl")
    pp.process(_tensor(12), SIZE)
    testing.exhaust_loss_budget(pp)
    testing.lose_context(pp)
    with pytest.raises(gpu_seg.ContextLostError, match="budget"):
        pp.process(_tensor(13), SIZE)


def test_context_creation_failures_reach_the_fallback(make_pp, recorder):
    clock_now = [0.0]
    pp = make_pp(policy=RecoveryPolicy(reprobe_interval=5.0, clock=lambda: clock_now[0]))
    pp.process(_tensor(14), SIZE)
    testing.fail_next_context_creations(pp, 2)
    testing.lose_context(pp)
    tensor = _tensor(15)
    result = pp.process(tensor, SIZE)
    assert result.backend == "cpu"
    _assert_correct(result, tensor)
    assert recorder.kinds == ["context_lost", "fallback"]
    clock_now[0] += 5.0
    assert pp.process(tensor, SIZE).backend == "cpu"  # second injected failure: probe fails
    clock_now[0] += 5.0
    assert pp.process(tensor, SIZE).backend == "gl"
    assert recorder.kinds[-1] == "gpu_restored"


def test_gl_backend_without_a_usable_device_raises():
    with pytest.raises(gpu_seg.GLUnavailableError):
        gpu_seg.SegmentationPostprocessor(backend="gl", device_index=999)


def test_auto_backend_without_a_usable_device_runs_on_the_cpu(recorder):
    with gpu_seg.SegmentationPostprocessor(
        "softmax", device_index=999, on_event=recorder, software_renderer="gl"
    ) as pp:
        tensor = _tensor(16)
        result = pp.process(tensor, SIZE)
        assert result.backend == "cpu"
        _assert_correct(result, tensor)
        assert recorder.kinds == ["fallback"] and pp.stats["fallback_active"]


def test_a_hung_gl_thread_is_treated_as_a_loss(make_pp, recorder):
    pp = make_pp(gl_timeout=1.0)
    pp.process(_tensor(17), SIZE)
    stuck = pp._supervisor.generation.session.thread
    release = threading.Event()
    threading.Thread(target=lambda: stuck.call(release.wait), daemon=True).start()  # blocks the GL thread
    time.sleep(0.1)
    tensor = _tensor(18)
    result = pp.process(tensor, SIZE)
    release.set()
    assert result.backend == "gl"
    _assert_correct(result, tensor)
    assert recorder.kinds == ["context_lost", "rebuilt"]
    assert "timed out" in recorder.events[0].reason


def test_many_threads_share_one_processor(make_pp):
    pp = make_pp()
    gl_threads = set()
    pipeline_submit = pp._supervisor.generation.pipeline.submit  # every readback strategy submits

    def spy(*args, **kwargs):
        gl_threads.add(threading.get_ident())
        return pipeline_submit(*args, **kwargs)

    pp._supervisor.generation.pipeline.submit = spy
    errors = []
    callers = set()

    def worker(seed):
        try:
            for i in range(5):
                tensor = _tensor(seed * 100 + i)
                callers.add(threading.get_ident())
                _assert_correct(pp.process(tensor, SIZE), tensor)
        except Exception as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert pp.stats["gl_frames"] == 30
    assert gl_threads == {
        pp._supervisor.generation.session.thread.ident
    }  # all GL work on the context's own thread
    assert not gl_threads & callers


def test_losses_while_other_threads_process(make_pp):
    pp = make_pp(policy=RecoveryPolicy(budget=LossBudget(capacity=100)))
    errors = []
    stop = threading.Event()

    def worker(seed):
        i = 0
        while not stop.is_set():
            tensor = _tensor(seed * 1000 + i)
            try:
                _assert_correct(pp.process(tensor, SIZE), tensor)
            except Exception as exc:
                errors.append(exc)
                return
            i += 1

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for _ in range(5):
        time.sleep(0.05)
        try:
            testing.lose_context(pp)
        except gpu_seg.GpuSegError:
            pass  # between generations: nothing to lose right now
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    # Frames go to the CPU only while a rebuild is deferred by the backoff (losses in quick succession).
    stats = pp.stats
    assert stats["context_losses"] >= 1 and stats["cpu_frames"] == stats["backoff_cpu_frames"]


def test_create_and_close_many_processors_leaks_nothing():
    def rss_kib() -> int:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # free pages held by glibc's per-thread arenas
        with open(f"/proc/{os.getpid()}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    # Each processor holds about 10 MiB of textures (llvmpipe keeps them in process memory):
    # six 512 x 512 float32 masks, the row pass, the tensor. Leaking them would add that much
    # per cycle; RSS noise from allocator arenas and llvmpipe's JIT is about +-20 MiB here.
    tensor = _tensor(19, (32, 32, 6))
    size = (512, 512)
    # Earlier tests' processors warm the fast CPU path up on a background thread (numba compiles
    # or loads kernels): let that finish first, or its memory would count as growth here.
    gpu_seg.cpu.warm_up()
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))

    def cycles(n: int) -> None:
        for _ in range(n):
            with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
                pp.process(tensor, size)
            assert pp.live_gl_objects() == 0

    cycles(10)  # warm-up
    growths = []
    for _ in range(2):  # a leak grows both rounds; a one-off allocator hiccup under load only one
        start = rss_kib()
        cycles(40)
        growths.append(rss_kib() - start)
    assert threading.active_count() <= threads + 1
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
    # moderngl keeps ~40 KiB per Context it ever created (tests/test_egl.py): 1.6 MiB per round here.
    check_rss_growth(min(growths), 48 * 1024, f"two rounds of 40 processors (~10 MiB each): {growths} KiB")


def test_rebuild_cycles_keep_live_gl_objects_at_baseline(make_pp):
    pp = make_pp(policy=RecoveryPolicy(budget=LossBudget(capacity=100)))
    tensor = _tensor(20)
    pp.process(tensor, SIZE)
    baseline = pp.live_gl_objects()
    for _ in range(15):
        testing.lose_context(pp)
        result = pp.process(tensor, SIZE)
        assert result.backend == "gl"
        assert pp.live_gl_objects() == baseline
    assert pp.stats["rebuilds"] == 15


def test_shader_error_on_a_healthy_context_falls_back_and_is_not_rebuilt(make_pp, recorder):
    """A broken shader is a ShaderBuildError (not a loss); auto falls back; re-probes do not rebuild it."""
    from gpu_seg.gl import programs

    clock_now = [0.0]
    pp = make_pp(policy=RecoveryPolicy(reprobe_interval=1.0, clock=lambda: clock_now[0]))
    original = programs.render_source

    def broken(name, params):
        text = original(name, params)
        return (
            text.replace("void main() {", "void main() { this is not glsl;") if "category" in name else text
        )

    programs.render_source = broken
    try:
        tensor = _tensor(21)
        result = pp.process(tensor, SIZE)
        assert result.backend == "cpu"
        _assert_correct(result, tensor)
        assert recorder.kinds == ["shader_error", "fallback"]
        builds = pp.stats["program_builds"]
        clock_now[0] += 1.0
        assert pp.process(tensor, SIZE).backend == "cpu"  # re-probe: the known-bad program is not rebuilt
        assert pp.stats["program_builds"] == builds
        assert pp.stats["context_losses"] == 0
        strict = make_pp(backend="gl")
        with pytest.raises(gpu_seg.ShaderBuildError) as info:
            strict.process(tensor, SIZE)
        assert "this is not glsl" in info.value.source and info.value.log
    finally:
        programs.render_source = original


def _live_contexts() -> int:
    """moderngl contexts still alive in C (each keeps gpu_seg's EGL wrappers: counted through them)."""
    from gpu_seg.gl.egl.contexts import EGLContext

    gc.collect()
    return sum(type(obj) is EGLContext for obj in gc.get_objects())


@pytest.mark.parametrize("readback", ["direct", "mapped"])
@pytest.mark.parametrize("end", ["trim", "loss"])
def test_a_context_generation_leaves_almost_nothing_behind(end, readback, new_processor):
    """Every context generation (a loss, a ``trim(release_context=True)``, an idle release) left
    Python memory behind for good: moderngl 5.13 keeps a reference to every address its loader
    returns and to every extension name (about 38 KiB a context, released or not), and the
    objects of a lost generation, dropped without ``release()``, kept its moderngl context and
    gpu_seg's EGL wrappers alive. Measured before the fix: 41 KiB a trim, 59 KiB a loss."""
    tensor = _tensor(29, (16, 16, 4))
    policy = RecoveryPolicy(budget=LossBudget(capacity=10**9), backoff=gpu_seg.Backoff(base=0))
    pp = new_processor(backend="gl", readback=readback, policy=policy)
    pp.process(tensor, (40, 30))

    def cycle() -> None:
        if end == "trim":
            pp.trim(release_context=True)
        else:
            testing.lose_context(pp)
        pp.process(tensor, (40, 30))

    start = _live_contexts()
    kept = python_memory_kept(cycle)
    assert _live_contexts() - start <= 2, "every generation's EGL wrappers stay alive"
    # What is left is moderngl's: program introspection (names it keeps references to) and
    # its context info, 1.6-1.9 KiB a generation on llvmpipe (tests/process_memory.py counts growth
    # only). The guarded deletes' trampolines, kept by a reference cycle, added 3-5 KiB.
    assert kept < 4 * 1024, f"{kept / 1024:.1f} KiB of Python memory kept per {end}"
    assert pp.stats["context_losses"] == (24 if end == "loss" else 0)


def test_where_gl_calls_without_a_context_may_reach_a_driver_lost_objects_are_forgotten(
    new_processor, monkeypatch
):
    """On an EGL whose GL entry points are the driver's own (no libglvnd, no Mesa glapi), a lost
    generation's objects are not released with no context current: they are forgotten, as before,
    and keep that generation's moderngl context."""
    from gpu_seg.gl import rawgl

    monkeypatch.setattr(rawgl, "calls_without_context_do_nothing", lambda resolve: False)
    pp = new_processor(backend="gl")
    tensor = _tensor(33)
    pp.process(tensor, SIZE)
    start = _live_contexts()
    testing.lose_context(pp)
    _assert_correct(pp.process(tensor, SIZE), tensor)
    assert pp.stats["context_losses"] == 1
    assert _live_contexts() == start + 1


def test_a_context_creation_hung_in_the_driver_does_not_block_later_ones(new_processor, monkeypatch):
    """A driver that hangs while a context is made: gl_timeout gives up on that GL thread (left
    behind). A lock held across moderngl's create_context (to keep moderngl's default context)
    stayed held by it, and every later context creation of the process timed out as well."""
    import moderngl

    real = moderngl.mgl.create_context
    hung, unblock = threading.Event(), threading.Event()

    def hangs_once(*args, **kwargs):
        if not hung.is_set():
            hung.set()
            unblock.wait(60)  # a hung driver, until the test is over
        return real(*args, **kwargs)

    monkeypatch.setattr(moderngl.mgl, "create_context", hangs_once)
    try:
        with pytest.raises(gpu_seg.GpuSegError):
            new_processor(backend="gl", gl_timeout=1.0)
        assert hung.is_set()
        pp = new_processor(backend="gl", gl_timeout=5.0)  # the driver answers again
        _assert_correct(pp.process(_tensor(34), SIZE), _tensor(34))
    finally:
        unblock.set()


def test_owned_contexts_leave_the_moderngl_default_context_alone(gl, new_processor):
    """moderngl makes every context it creates the default (``moderngl.get_context()``): every
    generation made gpu_seg's headless context the application's default, a lost one included."""
    import moderngl

    default = moderngl.get_context()  # the application's (here: the test session's context)
    pp = new_processor(backend="gl")
    tensor = _tensor(31)
    pp.process(tensor, SIZE)
    testing.lose_context(pp)
    pp.process(tensor, SIZE)
    pp.trim(release_context=True)
    _assert_correct(pp.process(tensor, SIZE), tensor)
    assert pp.stats["context_losses"] == 1
    assert moderngl.get_context() is default


@pytest.mark.parametrize("end", ["close", "trim"])
def test_mapped_readback_generations_leave_no_context_behind(end):
    """moderngl 5.13's ``external_buffer`` takes a reference to its context that ``release()`` never
    gives back: every generation with persistent mapped buffers kept its moderngl context (and
    gpu_seg's EGL wrappers) alive for good, about 15 KiB each."""
    tensor = _tensor(23, (16, 16, 4))
    pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback="mapped")

    def generation() -> None:
        nonlocal pp
        if end == "close":
            with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback="mapped") as other:
                other.process(tensor, (40, 30))
        else:
            pp.process(tensor, (40, 30))
            pp.trim(release_context=True)

    try:
        for _ in range(3):
            generation()
        start = _live_contexts()
        for _ in range(20):
            generation()
        assert _live_contexts() - start <= 2
    finally:
        pp.close()


_RELEASE_AFTER_THE_GENERATION = r"""
import json, sys
import numpy as np
import gpu_seg
from gpu_seg import testing

end, readback = sys.argv[1], sys.argv[2]
tensor = (np.random.default_rng(8).standard_normal((16, 20, 4)) * 4).astype(np.float32)
pp = gpu_seg.SegmentationPostprocessor("softmax", backend="gl", readback=readback, software_renderer="gl")
inputs = [pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes())) for _ in range(6)]
inputs += [pp.run_gl(lambda ctx: ctx.texture((20, 16), 4, tensor.tobytes(), dtype="f4")) for _ in range(6)]
pp.process(tensor, (40, 30))
if end == "loss":
    testing.lose_context(pp)
else:
    pp.trim(release_context=True)
pp.process(tensor, (40, 30))  # a new generation: its objects have the names the old ones had
live = pp.run_gl(lambda ctx: [obj.ctx is ctx for obj in inputs])  # how an application tells
pp.run_gl(lambda ctx: [obj.release() for obj in inputs])  # the application tidies up, as documented
report = {"live": any(live), "frames": []}
for i in range(6):
    frame = (np.random.default_rng(i).standard_normal((16, 20, 4)) * 4).astype(np.float32)
    size = (40 + i, 30)
    if i % 2:
        result = pp.process(frame, size)
        confidence, category = result.confidence_masks, result.category_mask
    else:
        masks = pp.process_resident(frame, size)
        confidence, category = masks.read_confidence(), masks.read_category()
    want = gpu_seg.reference_postprocess(frame, "softmax", size)
    report["frames"].append(bool(
        np.allclose(confidence, want.confidence_masks, rtol=2e-6, atol=2e-6)
        and np.array_equal(category, want.category_mask)))
report["losses"] = pp.stats["context_losses"]
pp.close()
print(json.dumps(report))
"""


@pytest.mark.parametrize("readback", ["direct", "mapped"])
@pytest.mark.parametrize("end", ["loss", "trim"])
def test_releasing_objects_of_an_ended_generation_leaves_the_new_one_alone(end, readback):
    """An application's inputs made in ``run_gl``, released (inside ``run_gl``, as documented) after
    their generation ended: moderngl's deletes went to the new context, whose objects have the same
    names (gpu_seg's own): GL errors, wrong masks, a segfault on the mapped readback (hence a
    subprocess). Now deletes through an ended context do nothing (``gpu_seg.gl.egl.deletes``)."""
    report = run_script(_RELEASE_AFTER_THE_GENERATION, end, readback)
    assert not report["live"] and report["frames"] == [True] * 6, report
    assert report["losses"] == (1 if end == "loss" else 0)


@pytest.mark.parametrize("end", ["trim", "idle"])
def test_a_loss_found_by_a_context_release_is_reported_and_leaves_nothing(end, new_processor, recorder):
    """A context lost (really destroyed) and then released, by ``trim(release_context=True)`` or the
    idle release, before any frame saw the loss: the release could not make it current, destroyed
    the handle and kept the generation (its moderngl context and EGL wrappers, about 46 KiB), and
    the loss was never counted nor reported."""
    # The idle period must outlast the gap between a frame and the loss, even on a loaded CI machine
    # (at 0.5 s the release came first there once, and there was no context left to lose).
    options = {"idle_release_after": 2.0, "idle_release_context": True} if end == "idle" else {}
    rounds = 4 if end == "idle" else 8
    policy = RecoveryPolicy(budget=LossBudget(capacity=10**6), backoff=gpu_seg.Backoff(base=0))
    pp = new_processor(backend="gl", policy=policy, on_event=recorder, **options)
    tensor = _tensor(41)
    _assert_correct(pp.process(tensor, SIZE), tensor)
    start = _live_contexts()
    for _ in range(rounds):
        testing.lose_context(pp)
        if end == "trim":
            pp.trim(release_context=True)
        else:
            deadline = time.monotonic() + 10
            trims = pp.stats["trims"]
            while pp.stats["trims"] == trims and time.monotonic() < deadline:
                time.sleep(0.02)
        _assert_correct(pp.process(tensor, SIZE), tensor)
    assert _live_contexts() - start <= 1
    assert pp.stats["context_losses"] == rounds
    assert [e.kind for e in recorder.events].count(gpu_seg.EventKind.CONTEXT_LOST) == rounds
