"""The GL supervisor: owns the current GL generation and the recovery policy's state.

:class:`~gpu_seg.SegmentationPostprocessor` validates a frame and hands it here (as MediaPipe's
calculator hands GL work to its GL helper). The supervisor runs it on the current generation
(session + pipeline), and on a context loss drops the dead generation, rebuilds through the one
rebuild path (:meth:`GLSupervisor._create_generation`) and recomputes the frame, within the loss
budget; past it (``backend="auto"``) it tells the caller to compute on the CPU and re-probes the
GPU later. It never sleeps: a rebuild deferred by the backoff is returned to the caller as a wait
(the caller sleeps without holding its lock) while other threads' frames go to the CPU.

All methods are called with the processor's lock held; events go to an :class:`EventLog` and are
delivered after the lock is released.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import moderngl
import numpy as np

from . import forks
from .errors import ContextLostError, GLUnavailableError, ShaderBuildError
from .events import EventKind, EventQueue
from .frame import Frame
from .gl.pipeline import GLPipeline
from .gl.programs import BuildCounters, ProgramCache
from .gl.readback import Purpose
from .gl.resident import SourceLostError
from .gl.session import AttachedSession, GLError, GLSession, OwnedSession, driver_failure
from .gl.worker import GLThread
from .recycled import RecycledArrays
from .resilience import RecoveryPolicy, RecoveryState

__all__ = ["Faults", "GLSupervisor", "Generation", "InFlight", "Outcome", "Verdict"]

log = logging.getLogger("gpu_seg")
T = TypeVar("T")

AttachTarget = moderngl.Context | Literal["current"]


@dataclass
class Faults:
    """Pending injected faults (see :mod:`gpu_seg.testing`)."""

    fail_links: int = 0
    fail_creations: int = 0

    def take_link_failure(self) -> str | None:
        if self.fail_links > 0:
            self.fail_links -= 1
            return "injected link failure (lost context)"
        return None

    def take_creation_failure(self) -> bool:
        if self.fail_creations > 0:
            self.fail_creations -= 1
            return True
        return False


@dataclass
class Generation:
    """The GL side of one context generation: its number, session and pipeline."""

    number: int
    session: GLSession
    pipeline: GLPipeline


@dataclass
class GLCounters:
    """What happened on the GL side since the processor was created."""

    context_losses: int = 0
    rebuilds: int = 0
    trims: int = 0
    builds: BuildCounters = field(default_factory=BuildCounters)


class FlightToken:
    """Owns the readback buffer of a frame in flight: once it is gone, so is the claim."""

    __slots__ = ("__weakref__",)


@dataclass(frozen=True)
class InFlight:
    """A frame submitted to GL and not yet collected: its generation and readback ticket."""

    frame: Frame
    generation: int
    ticket: int
    trims: int  #: the pipeline's trim count at submission (a trim since frees the frame's buffer)
    #: Owns the frame's readback buffer: dropping the InFlight (collected or not) frees it.
    token: FlightToken = field(repr=False, compare=False)


class Verdict(enum.Enum):
    """What the caller does with a frame after :meth:`GLSupervisor.run`."""

    DONE = "done"  #: computed on GL into the arrays given
    CPU = "cpu"  #: compute it on the CPU
    WAIT = "wait"  #: sleep ``Outcome.delay`` seconds without the lock, then call ``run`` again


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    delay: float = 0.0
    during_backoff: bool = False  #: a CPU frame only because a rebuild is deferred by the backoff
    confidence: np.ndarray | None = None  #: DONE: the results (the caller's arrays, or fresh ones)
    category: np.ndarray | None = None
    error: BaseException | None = None  #: CPU: why GL could not compute the frame (if it was tried)


_CPU = Outcome(Verdict.CPU)


class GLSupervisor:
    """Runs frames on GL across context generations; see the module docstring.

    Args:
        backend: ``"auto"`` (a frame GL cannot compute goes to the CPU) or ``"gl"`` (it raises).
        attach: ``None`` for an owned EGL context on a dedicated GL thread, or the application
            context to attach (a ``moderngl.Context`` or ``"current"``).
        events: where events are recorded (the processor's EventLog delivers them).
        policy: recovery settings; this supervisor keeps its own state.
        device_index: EGL device of owned contexts.
        gl_timeout: seconds before a frame on the GL thread counts as a hung driver.
        time_gpu: time each frame's GL work with a timer query (``pipeline.last_gpu_ms``).
        readback: ``"auto"``, ``"direct"`` or ``"mapped"`` (see :mod:`gpu_seg.gl.readback`).
        passes: ``"auto"``, ``"fragment"`` or ``"compute"`` (see :mod:`gpu_seg.gl.compute`).
    """

    def __init__(
        self,
        backend: Literal["auto", "gl"],
        attach: AttachTarget | None,
        events: EventQueue,
        policy: RecoveryPolicy,
        device_index: int | None,
        gl_timeout: float | None,
        time_gpu: bool = False,
        readback: str = "auto",
        passes: str = "auto",
        arrays: RecycledArrays | None = None,
    ) -> None:
        self.backend = backend
        self.passes = passes  # "auto" (the pipeline's choice per renderer), "fragment" or "compute"
        self.readback = readback  # "auto" (the pipeline's choice per renderer), "direct" or "mapped"
        self.events = events
        self.recovery: RecoveryState = policy.new_state()
        self.counters = GLCounters()
        self.faults = Faults()
        self.generation: Generation | None = None
        self.last_number = 0  # the number of the newest generation ever created
        self.max_texture_size: int | None = None
        self._attached_mode = attach is not None
        self._pending_attach: AttachTarget | None = attach
        self._device_index = device_index
        self._gl_timeout = gl_timeout
        self._thread: GLThread | None = None  # kept across generations unless it hangs
        self._announce_rebuild = False
        self._rebuild_at: float | None = None  # a rebuild deferred by the backoff (time.monotonic)
        self._rebuild_owner: int | None = None  # the thread that waits for it
        self.time_gpu = time_gpu  # GL_TIME_ELAPSED per frame (pipeline.last_gpu_ms)
        #: Where owned result arrays come from (memory of results the caller has dropped)
        self.arrays = arrays if arrays is not None else RecycledArrays(0)
        #: (shapes and format, confidence, category) kept for caller-array frames on direct readback:
        #: at most one entry, taken by a frame (pop) and given back after its copy (append)
        self._staging: collections.deque[tuple[tuple, np.ndarray | None, np.ndarray | None]] = (
            collections.deque(maxlen=1)
        )
        #: moderngl context -> generation number, for every generation (GL-side inputs of a dead one)
        self.contexts: weakref.WeakKeyDictionary[moderngl.Context, int] = weakref.WeakKeyDictionary()
        #: Dropped generations whose readback buffers lent views still reference: their contexts
        #: stay undestroyed (so the mapped memory stays valid) until those views are gone.
        #: Each entry: (generation, whether it was healthy when dropped).
        self._graveyard: list[tuple[Generation, bool]] = []
        #: Sessions the GL thread made for a generation not stored yet (see _create_generation).
        self._made: list[OwnedSession] = []
        #: The process this supervisor was made in, when this one is a forked child of it.
        self.forked_from: int | None = None
        forks.track(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child (one thread, see :mod:`gpu_seg.forks`): forget every generation
        without a GL or EGL call. The next frame makes a new one, which raises
        ForkedProcessError where the parent had loaded EGL (``backend="auto"``: the CPU)."""
        dropped = [self.generation] + [generation for generation, _ in self._graveyard]
        self.generation, self._graveyard = None, []
        for generation in dropped:
            if generation is not None:
                generation.pipeline.abandon()
                generation.session.forget_after_fork()
        self._thread = None  # its thread does not exist here
        self._rebuild_at = self._rebuild_owner = None
        self._staging.clear()
        if self._attached_mode:
            self._pending_attach = None  # the application's context is the parent's
        if self.forked_from is None:
            self.forked_from = os.getppid()

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the first generation; with ``backend="auto"`` a failure enters the fallback."""
        try:
            self._create_generation()
        except (GLUnavailableError, ContextLostError) as exc:
            if self.backend == "gl":
                raise
            self._enter_fallback(f"GL unavailable: {exc}")

    def attach(self, context: AttachTarget) -> None:
        """Work inside an application context from now on (a new generation)."""
        self._attached_mode = True
        self.drop_generation(release=True)
        self._pending_attach = context
        self.start()
        if self.generation is not None and self.generation.number > 1:
            self._announce_rebuild = False
            self.counters.rebuilds += 1
            self._record(
                EventKind.REBUILT, f"attached a new application context (generation {self.last_number})"
            )

    def trim(self, release_context: bool = False) -> None:
        """Release pooled GL objects (and with ``release_context`` the whole generation), and the
        staging pair of caller-array frames (host memory of the frame's size)."""
        self.drop_staging()
        if self._graveyard:
            self.bury()
        generation = self.generation
        if generation is None:
            return
        if release_context and not self._attached_mode:
            self.drop_generation(release=True)
            what = "released the context and every GL object"
        else:
            try:
                generation.session.run(generation.pipeline.trim)
            except ContextLostError as exc:  # found dead while idle: the next frame rebuilds
                self._lost(exc)
                return
            what = "released pooled GL objects"
        self.counters.trims += 1
        self._record(EventKind.TRIMMED, what)

    def drop_staging(self) -> None:
        """Let go of the staging pair of caller-array frames (host memory; any thread)."""
        self._staging.clear()

    @property
    def attached(self) -> bool:
        """Whether this supervisor works in application contexts (used only on their thread)."""
        return self._attached_mode

    @property
    def gl_thread(self) -> GLThread | None:
        """The thread that runs this supervisor's GL work (None before the first generation)."""
        return self._thread

    def close(self) -> None:
        self.drop_staging()
        self._abandon_made()
        self.drop_generation(release=True)
        self.bury()
        if self._graveyard:
            log.warning(
                "gpu_seg: closed with zero-copy views of %d context generation(s) still referenced; "
                "their mapped memory stays allocated until the process exits",
                len(self._graveyard),
            )
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def drop_generation(self, release: bool) -> None:
        """Forget the current generation: ``release`` it on a live context, else ``abandon`` it.

        Readback buffers that lent views still reference are never released. On an owned context
        the views hold its keeper context (``GLSession.lend_anchor``): the context goes now, the
        share group and those buffers when the last view does. On an attached context the
        generation (its other objects released or abandoned now) waits in the graveyard until
        :meth:`bury` finds the views gone.
        """
        generation, self.generation = self.generation, None
        if generation is None:
            return
        try:
            self._end(generation, release)
        except BaseException:
            # Cut short (a signal handler's exception): ended without GL calls, not forgotten with
            # its context, and without waiting for a GL thread that may be busy. Where the release
            # was under way, the GL thread does both: each is idempotent.
            _abandon(generation, wait=False)
            raise

    def _end(self, generation: Generation, release: bool) -> None:
        if generation.pipeline.lent_views() and generation.session.lend_anchor() is None:
            self._keep_for_views(generation, release)
            return
        if release:
            try:
                generation.session.close(release=generation.pipeline.release)
                return
            except ContextLostError as exc:  # lost before anyone noticed: abandoned, and reported
                _abandon(generation)
                self._report_loss(exc, generation.number)
                return
            except Exception as exc:  # a dying context: fall through to abandon
                if not driver_failure(exc):
                    raise
                log.debug("release of generation %d failed: %s", generation.number, exc)
        _abandon(generation)

    def _keep_for_views(self, generation: Generation, healthy: bool) -> None:
        if healthy:
            try:
                generation.session.run(generation.pipeline.release)  # keeps the lent buffers
            except Exception as exc:  # lost meanwhile: keep it as a dead one
                if not driver_failure(exc):
                    raise
                log.debug("release of generation %d failed: %s", generation.number, exc)
                healthy = False
        if not healthy:
            generation.pipeline.abandon()  # keeps the lent buffers, without GL calls
        self._graveyard.append((generation, healthy))

    def bury(self) -> None:
        """Destroy the kept generations whose lent views are all gone."""
        kept = []
        for generation, healthy in self._graveyard:
            if generation.pipeline.lent_views():
                kept.append((generation, healthy))
                continue
            if healthy:
                try:
                    generation.session.close(release=generation.pipeline.release_lent)
                    continue
                except Exception as exc:
                    if not driver_failure(exc):
                        raise
                    log.debug("release of kept generation %d failed: %s", generation.number, exc)
            _abandon(generation)
        self._graveyard = kept

    def gpu_memory(self) -> dict[str, object] | None:
        """Video memory as the driver of the current generation reports it, or None."""
        generation = self.generation
        if generation is None:
            return None
        try:
            return generation.session.gpu_memory()
        except ContextLostError:  # found lost: the next frame handles it
            return None

    def live_gl_objects(self) -> int:
        """GL objects held now: the context plus the pipeline's textures, framebuffers, programs..."""
        generation = self.generation
        return 0 if generation is None else 1 + generation.pipeline.live_objects()

    # ----------------------------------------------------------------------------- frames
    def run(
        self,
        frame: Frame,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
        lend: bool = False,
    ) -> Outcome:
        """Compute ``frame`` on GL.

        The caller's arrays (``*_dst``, may be None) are written only once the frame is known
        good: with a readback that makes GL calls ("direct") every attempt reads into fresh
        arrays, which the caller copies from; with a mapped readback the results are copied from
        host memory straight into the caller's arrays after the health check. DONE carries the
        arrays holding the results. With ``lend`` (and no caller arrays) the results of a mapped
        readback are read-only views of mapped memory (see :meth:`GLPipeline.lend`).

        Returns DONE, CPU (auto backend only) or WAIT. Raises (``backend="gl"``) ContextLostError,
        GLUnavailableError, ShaderBuildError or GLError when GL cannot compute the frame.
        """
        outcome, results = self._recovering(
            functools.partial(self._compute, frame=frame, confidence_dst=confidence_dst,
                              category_dst=category_dst, lend=lend),
            cpu_ok=True,
        )  # fmt: skip
        if outcome.verdict is not Verdict.DONE:
            return outcome
        confidence, category = results
        return Outcome(Verdict.DONE, confidence=confidence, category=category)

    def _recovering(self, work: Callable[[Generation], T], cpu_ok: bool) -> tuple[Outcome, T | None]:
        """The one recovery loop of :meth:`run` and :meth:`run_resident`: ``work(generation)`` on the
        current generation, rebuilt after a loss within the loss budget and backoff.

        Returns ``(DONE, result)``, or ``(WAIT / CPU, None)`` with, for CPU, the error that stopped GL
        (None when the fallback is active and no probe is due). ``cpu_ok=False`` (resident work, which
        has no CPU answer) waits through a deferred rebuild instead of taking the CPU meanwhile.
        Raises with ``backend="gl"`` as :meth:`run` documents; :class:`SourceLostError` always.
        """
        if self._graveyard:
            self.bury()
        probing = self.recovery.fallback_active
        if probing and not self.recovery.probe_due():
            return _CPU, None
        deferred = self._deferred_rebuild(cpu_ok)
        if deferred is not None:
            return deferred, None
        if self.generation is None and self._attached_mode and self._pending_attach is None:
            if self.backend == "gl" or not cpu_ok:
                raise self._no_context_attached()
            return _CPU, None
        while True:
            try:
                generation = self.generation or self._create_generation()
                result = work(generation)
            except SourceLostError:
                raise  # the caller's input is dead, not this generation: no loss to count
            except ContextLostError as exc:
                outcome = self._after_loss(exc)
                if outcome is None:
                    continue
                return dataclasses.replace(outcome, error=exc), None
            except GLUnavailableError as exc:
                if self.backend == "gl":
                    raise
                self._enter_fallback(f"GL unavailable: {exc}")
                return Outcome(Verdict.CPU, error=exc), None
            except ShaderBuildError as exc:
                self._record(EventKind.SHADER_ERROR, str(exc).splitlines()[0])
                if self.backend == "gl":
                    raise
                self._enter_fallback(f"shader error: {exc.program}")
                return Outcome(Verdict.CPU, error=exc), None
            except GLError as exc:
                self._record(EventKind.GL_ERROR, str(exc))
                if self.backend == "gl":
                    raise
                return Outcome(Verdict.CPU, error=exc), None
            self._after_success(probing)
            return Outcome(Verdict.DONE), result

    def _compute(
        self,
        generation: Generation,
        frame: Frame,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
        lend: bool = False,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        pipeline = generation.pipeline
        if lend and pipeline.lends and generation.session.keep_objects():
            ticket = generation.session.run(functools.partial(_submit_and_wait, pipeline, frame, "lend"))
            return pipeline.lend(ticket, anchor=generation.session.lend_anchor())
        if confidence_dst is None and category_dst is None and self._owned_views(generation):
            return self._owned_view_frame(generation, frame)
        if pipeline.collect_needs_gl:
            # GL reads into arrays before the health check: never the caller's. A mask without a
            # caller's array gets one of its own (fresh or recycled, returned as it is; forgotten by
            # the recycling if the attempt fails); a mask with one is read into the staging array
            # kept for the next frames of the same geometry (no page faults of fresh memory each
            # frame) and copied into the caller's array once the frame is known good (the session
            # checked the context after the frame). The staging pair is taken for the attempt (a
            # frame of another thread makes its own meanwhile) and given back only after the copy
            # (an attempt that does not end normally, a loss or a hung driver that may still
            # write later, takes it away for good).
            staging = confidence_dst is not None or category_dst is not None
            if staging:
                key, kept_confidence, kept_category = self._take_staging(frame, confidence_dst, category_dst)
                confidence = (
                    kept_confidence if confidence_dst is not None else frame.allocate_confidence(self.arrays)
                )
                category = kept_category if category_dst is not None else frame.allocate_category(self.arrays)
            else:
                confidence, category = frame.allocate(self.arrays)
            try:
                generation.session.run(functools.partial(pipeline.process, frame, confidence, category))
            except BaseException:
                self.arrays.forget(confidence, category)  # a hung driver may still write into them
                raise
            if staging:
                if confidence_dst is not None:
                    np.copyto(confidence_dst, kept_confidence)
                    confidence = confidence_dst
                if category_dst is not None:
                    np.copyto(category_dst, kept_category)
                    category = category_dst
                self._staging.append((key, kept_confidence, kept_category))
            return confidence, category
        if pipeline.stream_collect and confidence_dst is None and category_dst is None:
            # Fresh arrays, nobody else's: copied part by part on the GL thread as the GPU delivers
            # them; an attempt that does not end normally drops them.
            confidence, category = frame.allocate(self.arrays)
            work = functools.partial(_submit_and_stream, pipeline, frame, confidence, category)
            try:
                generation.session.run(work)
            except BaseException:
                self.arrays.forget(confidence, category)
                raise
            return confidence, category
        ticket = generation.session.run(functools.partial(_submit_and_wait, pipeline, frame))
        return self._collect(pipeline, frame, ticket, confidence_dst, category_dst)

    def _owned_views(self, generation: Generation) -> bool:
        """Whether an owned frame can be returned as writeable views of its readback buffer
        (``GLPipeline.owned_views``): an owned context whose buffers outlive it (a keeper context),
        and a buffer to spare (else the frame is copied as usual)."""
        pipeline, session = generation.pipeline, generation.session
        return (
            pipeline.owned_views
            and session.owned
            and pipeline.can_lend("owned")
            and session.keep_objects()
            and self.arrays.disabled is None  # lent buffers are reused on reference counts too
        )

    def _owned_view_frame(
        self, generation: Generation, frame: Frame
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frame's results as writeable views of its readback buffer, held like lent views;
        a category mask whose rows are padded (width not a multiple of 4) is copied out instead,
        so that the result's arrays are C-contiguous."""
        pipeline = generation.pipeline
        ticket = generation.session.run(functools.partial(_submit_and_wait, pipeline, frame, "owned"))
        confidence, category = pipeline.lend(ticket, True, generation.session.lend_anchor())
        if category is not None and not category.flags.c_contiguous:
            padded, category = category, frame.allocate_category(self.arrays)
            np.copyto(category, padded)
        return confidence, category

    def _collect(
        self,
        pipeline: GLPipeline,
        frame: Frame,
        ticket: int,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Copy a waited-for mapped frame out (a host copy; the health check has passed)."""
        confidence = confidence_dst if confidence_dst is not None else frame.allocate_confidence(self.arrays)
        category = category_dst if category_dst is not None else frame.allocate_category(self.arrays)
        pipeline.collect(confidence, category, ticket)
        return confidence, category

    # ----------------------------------------------------------------------------- GPU-resident work
    def run_resident(self, work: Callable[[Generation], T]) -> tuple[Verdict, float, T | None]:
        """Run ``work(generation)`` (GL work whose results stay on the GPU) with :meth:`run`'s recovery.

        A loss drops the generation, rebuilds (within the loss budget and backoff) and calls
        ``work`` again on the new generation; ``work`` raises :class:`SourceLostError` when its
        input belongs to a dead generation (not counted as a new loss). There is no CPU answer for
        resident work: where :meth:`run` would send a frame to the CPU, this raises (the fallback
        is still entered with ``backend="auto"``, so ``process()`` uses the CPU meanwhile).

        Returns:
            ``(DONE, 0.0, result)`` or ``(WAIT, delay, None)`` (sleep without the lock, call again).

        Raises:
            GLUnavailableError: GL cannot be used now (no context, or the CPU fallback is active).
            ContextLostError: the context was lost and cannot be rebuilt now, or the input is dead.
            ShaderBuildError, GLError: as :meth:`run` with ``backend="gl"``.
        """
        outcome, result = self._recovering(work, cpu_ok=False)
        if outcome.verdict is Verdict.DONE:
            return Verdict.DONE, 0.0, result
        if outcome.verdict is Verdict.WAIT:
            return Verdict.WAIT, outcome.delay, None
        error = outcome.error
        if isinstance(error, ContextLostError):
            raise ContextLostError(
                f"context lost and GL cannot be rebuilt now: {error}", reason=error.reason
            ) from error
        if error is not None:
            raise error
        forks.check_egl_usable()  # a forked child's fallback: ForkedProcessError, saying what to do
        raise GLUnavailableError(
            f"GL is unavailable ({self.recovery.fallback_reason}); GPU-resident results need GL"
        )

    def run_on_session(self, session: GLSession, work: Callable[[], T]) -> T:
        """Run ``work`` on ``session`` (a generation's, with its context current); a loss found
        there drops that generation if it is still the current one, and is raised."""
        try:
            return session.run(work)
        except ContextLostError as exc:
            if self.generation is not None and self.generation.session is session:
                self._lost(exc)
            raise

    def current_generation(self) -> Generation:
        """The current generation, created if needed (no CPU answer; see :meth:`run_resident`)."""
        verdict, delay, generation = self.run_resident(lambda generation: generation)
        if verdict is Verdict.WAIT or generation is None:
            raise ContextLostError(
                f"a rebuild after a context loss is deferred by the backoff for {delay:.2f} s",
                reason="rebuild deferred",
            )
        return generation

    # ----------------------------------------------------------------------------- frames in flight
    def submit(self, frame: Frame) -> InFlight | None:
        """Start ``frame`` on GL without waiting for it (mapped readback only).

        Returns None when it cannot be in flight (no healthy generation, the fallback, a deferred
        rebuild, a direct readback, or a failure now): the caller computes it at once with
        :meth:`run`, which handles every case. The frame's buffer belongs to the returned InFlight
        (its ``token``): dropped without :meth:`finish`, or by a :meth:`finish` that was cut short,
        the buffer is free again. Raises CapacityError when too many frames are in flight or
        zero-copy results held.
        """
        if self._graveyard:
            self.bury()
        generation = self.generation
        if generation is None or self.recovery.fallback_active or self._rebuild_at is not None:
            return None
        if not generation.pipeline.lends:
            return None
        generation.pipeline.check_capacity("async")
        token = FlightToken()
        try:
            ticket = generation.session.run(
                functools.partial(generation.pipeline.submit, frame, "async", token)
            )
        except ContextLostError as exc:
            self._after_loss(exc)  # counted; run() then rebuilds, waits or falls back
            return None
        except (GLError, ShaderBuildError, GLUnavailableError) as exc:
            log.debug("frame not started in flight: %s", exc)  # run() meets and reports it again
            return None
        return InFlight(frame, generation.number, ticket, generation.pipeline.trims, token)

    def flight_is_stale(self, flight: InFlight) -> bool:
        """Whether the frame in flight belongs to a generation (or a pool, after a trim) that is
        gone: :meth:`finish` then computes it anew."""
        generation = self.generation
        return (
            generation is None
            or generation.number != flight.generation
            or generation.pipeline.trims != flight.trims
        )

    def finish(
        self,
        flight: InFlight,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
        lend: bool = False,
    ) -> Outcome:
        """Wait for a frame in flight and collect it (as :meth:`run` would return it).

        A frame whose generation is gone, or that is lost now, is recomputed by :meth:`run`
        (or goes to the CPU / WAIT like any frame): never returned from a dead generation.
        """
        if self.flight_is_stale(flight):
            return self.run(flight.frame, confidence_dst, category_dst, lend)
        generation = self.generation
        assert generation is not None
        pipeline = generation.pipeline
        try:
            generation.session.run(functools.partial(pipeline.wait, flight.ticket))
        except ContextLostError as exc:
            outcome = self._after_loss(exc)
            if outcome is not None:
                return outcome
            return self.run(flight.frame, confidence_dst, category_dst, lend)
        except GLError as exc:
            self._record(EventKind.GL_ERROR, str(exc))
            if self.backend == "gl":
                raise
            return _CPU
        if lend and confidence_dst is None and category_dst is None and generation.session.keep_objects():
            confidence, category = pipeline.lend(flight.ticket, anchor=generation.session.lend_anchor())
        else:
            confidence, category = self._collect(
                pipeline, flight.frame, flight.ticket, confidence_dst, category_dst
            )
        self._after_success(False)
        return Outcome(Verdict.DONE, confidence=confidence, category=category)

    def _deferred_rebuild(self, cpu_ok: bool = True) -> Outcome | None:
        if self._rebuild_at is None:
            return None
        remaining = self._rebuild_at - time.monotonic()
        if remaining <= 0:
            self._rebuild_at = self._rebuild_owner = None
            return None
        if cpu_ok and self.backend == "auto" and threading.get_ident() != self._rebuild_owner:
            return Outcome(Verdict.CPU, during_backoff=True)
        return Outcome(Verdict.WAIT, remaining)

    def _after_success(self, probing: bool) -> None:
        if probing:
            self.recovery.leave_fallback()
            self._announce_rebuild = False
            self._record(EventKind.GPU_RESTORED, "a GL frame succeeded after the fallback")
        elif self._announce_rebuild:
            self._announce_rebuild = False
            self.counters.rebuilds += 1
            self._record(EventKind.REBUILT, f"recomputed on context generation {self.last_number}")

    def _lost(self, exc: ContextLostError) -> None:
        """Drop the dead generation (no GL calls on it), then count and report its loss."""
        number = self.generation.number if self.generation else self.last_number
        self.drop_generation(release=False)
        self._report_loss(exc, number)

    def _report_loss(self, exc: ContextLostError, number: int) -> None:
        """Count the loss of generation ``number`` and report it (a ``context_lost`` event)."""
        self.counters.context_losses += 1
        self._announce_rebuild = True  # the next successful GL frame reports the rebuild
        self._record(EventKind.CONTEXT_LOST, exc.reason or str(exc), number)

    def _after_loss(self, exc: ContextLostError) -> Outcome | None:
        """Record a loss; returns None to retry on GL now, or what the caller does instead."""
        self._lost(exc)
        if self.recovery.fallback_active:  # a failed re-probe
            self.recovery.probe_failed()
            return _CPU
        may_rebuild, delay = self.recovery.record_loss()
        if self._attached_mode and self._pending_attach is None:
            # Only the application can provide a new context: report, and wait for attach().
            if self.backend == "gl":
                raise exc
            return _CPU
        if not may_rebuild:
            if self.backend == "gl":
                raise ContextLostError(
                    f"context lost and the loss budget is exhausted: {exc}", reason=exc.reason
                ) from exc
            self._enter_fallback(f"loss budget exhausted ({exc.reason})")
            return _CPU
        if delay > 0:
            self._rebuild_at = time.monotonic() + delay
            self._rebuild_owner = threading.get_ident()
            return Outcome(Verdict.WAIT, delay)
        return None

    # ----------------------------------------------------------------------------- the rebuild path
    def _create_generation(self) -> Generation:
        """The one rebuild path: a session, a program cache and a pipeline for a new generation,
        stored as :attr:`generation`.

        Cut short (a signal handler's exception), nothing is left behind: the GL thread hands each
        session it makes to ``_made`` before the creation returns, and a session not stored as the
        generation is abandoned (here, or by the next creation or ``close()`` where the GL thread
        was still making it).
        """
        if self.faults.take_creation_failure():
            raise GLUnavailableError("injected context-creation failure")
        self._abandon_made()
        number = self.last_number + 1
        session: GLSession | None = None
        programs: ProgramCache | None = None
        try:
            if self._attached_mode:
                pending = self._pending_attach
                if pending is None:
                    raise self._no_context_attached()
                session = AttachedSession(number, None if pending == "current" else pending)
                self._pending_attach = None
            else:
                forks.check_egl_usable()  # before a GL thread is made for nothing
                if self._thread is None or not self._thread.usable:
                    self._thread = GLThread("gpu_seg-gl")
                session = OwnedSession.create(
                    number,
                    self._device_index,
                    timeout=self._gl_timeout,
                    thread=self._thread,
                    made=self._note_made,
                )
            self.last_number = number
            self.contexts[session.mgl] = number
            programs = ProgramCache(
                session.mgl,
                number,
                session.info.glsl_version,
                session.check,
                self.counters.builds,
                self.faults.take_link_failure,
            )
            mgl = session.mgl
            pipeline = session.run(
                lambda: GLPipeline(mgl, programs, readback=self.readback, passes=self.passes)
            )
            self.max_texture_size = pipeline.limits.max_texture_size
            pipeline.time_gpu = self.time_gpu
            generation = Generation(number, session, pipeline)
            others = [s for s in self._made if s is not session]
            self.generation, self._made[:] = generation, others  # no call between: stored, unlisted at once
        except BaseException:
            if session is not None:  # ours, with its programs (abandoned again below if listed: idempotent)
                session.abandon(release=None if programs is None else programs.release, wait=False)
            self._abandon_made()
            raise
        self._abandon_made()  # made for creations cut short earlier (the GL thread made them before ours)
        return generation

    def _note_made(self, session: OwnedSession) -> None:
        """On the GL thread: a session was made for the generation being created."""
        self._made.append(session)  # the same list for good: the GL thread may append late

    def _abandon_made(self) -> None:
        """Abandon the sessions made for generations that were never stored (see _create_generation)."""
        while self._made:
            self._made[-1].abandon(wait=False)  # (cut short here: again next time)
            self._made.pop()

    def _take_staging(
        self, frame: Frame, confidence_dst: np.ndarray | None, category_dst: np.ndarray | None
    ) -> tuple[tuple, np.ndarray | None, np.ndarray | None]:
        """``(key, confidence, category)``: the kept staging arrays (taken: no other frame uses them
        until they are given back) if they are of the shapes of ``frame``'s masks that have a
        caller's array, else new ones (None for a mask without one)."""
        key = (
            frame.confidence_shape if confidence_dst is not None else None,
            frame.confidence_format,
            frame.category_shape if category_dst is not None else None,
        )
        try:
            kept = self._staging.pop()  # atomic: two threads never take the same pair
        except IndexError:
            kept = None
        if kept is not None and kept[0] == key:
            return kept
        confidence = frame.allocate_confidence() if confidence_dst is not None else None
        category = frame.allocate_category() if category_dst is not None else None
        return key, confidence, category

    def _no_context_attached(self) -> ContextLostError:
        if self.forked_from is not None:
            return ContextLostError(
                f"the attached context belongs to process {self.forked_from}, which forked this "
                "one; attach a context made in this process with attach()",
                reason="forked",
            )
        return ContextLostError(
            "the application's context was lost; attach a new one with attach()",
            reason="no context attached",
        )

    def _enter_fallback(self, reason: str) -> None:
        if not self.recovery.fallback_active:
            self.recovery.enter_fallback(reason)
            self._record(EventKind.FALLBACK, reason)
        else:
            self.recovery.probe_failed()

    def _record(self, kind: EventKind, reason: str, generation: int | None = None) -> None:
        self.events.record(kind, reason, self.last_number if generation is None else generation)


def _submit_and_stream(
    pipeline: GLPipeline, frame: Frame, confidence: np.ndarray | None, category: np.ndarray | None
) -> None:
    ticket = pipeline.submit(frame, owner=frame, stream=True)  # owner: see _submit_and_wait
    pipeline.stream_into(confidence, category, ticket)


def _submit_and_wait(pipeline: GLPipeline, frame: Frame, purpose: Purpose = "sync") -> int:
    # The frame owns its buffer until collected: a caller that stops waiting for the GL thread (an
    # exception raised while it waited: KeyboardInterrupt, a signal handler's) drops the frame, and
    # the buffer is free again; the GL thread, which ran the frame all the same, lets go of it first.
    ticket = pipeline.submit(frame, purpose, frame)
    pipeline.wait(ticket)
    return ticket


def _abandon(generation: Generation, wait: bool = True) -> None:
    """End a lost generation without GL calls: its session releases the pipeline's objects with
    no context current where it can (see ``GLSession.abandon``); the pipeline forgets the rest.
    ``wait=False`` (after an interrupt): the GL thread does it later, maybe after a release under
    way there, so the pipeline is left to it and to the garbage collector."""
    generation.session.abandon(release=generation.pipeline.release_lost, wait=wait)
    if wait:
        generation.pipeline.abandon()
