"""Events a processor reports about its GL side, and their delivery outside the processor's lock.

Events are recorded while the processor holds its lock and delivered to ``on_event`` after the
lock is released, on the thread whose frame produced them: a callback may call the processor
(``process()``, ``stats``) without re-entering a recovery half-way, and a callback that raises is
logged and changes nothing else.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["DeferredCallback", "Event", "EventKind", "EventLog", "EventQueue"]

log = logging.getLogger("gpu_seg")


class EventKind(enum.StrEnum):
    """What happened. The values are the strings earlier versions used (``event.kind == "rebuilt"``)."""

    CONTEXT_LOST = "context_lost"  #: a loss was detected; the dead generation is already dropped
    REBUILT = "rebuilt"  #: a new generation computed a frame (or an application context was attached)
    FALLBACK = "fallback"  #: frames now run on the CPU (auto backend)
    GPU_RESTORED = "gpu_restored"  #: a GL frame succeeded after the fallback
    SHADER_ERROR = "shader_error"  #: a program failed to build on a healthy context
    GL_ERROR = "gl_error"  #: a GL call failed on a healthy context
    TRIMMED = "trimmed"  #: pooled GL objects (or the context) were released while idle


_INFO_KINDS = (EventKind.REBUILT, EventKind.GPU_RESTORED, EventKind.TRIMMED)


@dataclass(frozen=True)
class Event:
    """Something that happened to the GL side of a processor.

    Attributes:
        kind: an :class:`EventKind` (a ``str`` enum, so ``event.kind == "context_lost"`` holds).
        time: wall-clock time (``time.time()``).
        reason: what was detected, in words.
        generation: the context generation concerned.
    """

    kind: EventKind
    time: float
    reason: str
    generation: int


class EventQueue:
    """Events recorded per thread (and logged at once), for their :class:`EventLog` to deliver.

    It holds no callback: the GL side keeps it (and what releases the GL side of a processor
    dropped without ``close()`` keeps the GL side) without keeping the application's callback, and
    through it, as often as not, the processor itself, alive.
    """

    def __init__(self) -> None:
        self._pending = threading.local()

    def record(self, kind: EventKind, reason: str, generation: int) -> None:
        """Log an event now and queue it for delivery by this thread's next ``deliver``."""
        level = logging.INFO if kind in _INFO_KINDS else logging.WARNING
        log.log(level, "gpu_seg %s (generation %d): %s", kind.value, generation, reason)
        queue = getattr(self._pending, "queue", None)
        if queue is None:
            queue = self._pending.queue = []
        queue.append(Event(kind, time.time(), reason, generation))

    def take(self) -> list[Event]:
        """This thread's queued events, removed."""
        queue = getattr(self._pending, "queue", None)
        if not queue:
            return []
        self._pending.queue = []
        return queue


class EventLog:
    """Events recorded under the processor's lock, per thread, and delivered after it is released."""

    def __init__(self, callback: Callable[[Event], None] | None) -> None:
        self.callback = callback
        self.queue = EventQueue()

    def record(self, kind: EventKind, reason: str, generation: int) -> None:
        """Log an event now and queue it for delivery by this thread's next :meth:`deliver`."""
        self.queue.record(kind, reason, generation)

    def deliver(self) -> None:
        """Call the callback with this thread's queued events; call it without holding any lock."""
        events = self.queue.take()
        if not events or self.callback is None:
            return
        for event in events:
            try:
                self.callback(event)
            except Exception:
                log.exception("gpu_seg on_event callback raised for %s; ignored", event.kind.value)


class DeferredCallback:
    """An ``on_event`` callback for a processor inside an object with a lock of its own (the
    :class:`~gpu_seg.segmenter.ImageSegmenter`): events that arrive on a thread while it runs
    :meth:`deferring` are kept and delivered when that block ends, after the owner's lock is
    released, so the callback may call the owner; events of other threads go through at once.
    """

    def __init__(self, callback: Callable[[Event], None]) -> None:
        self.callback = callback
        self._held = threading.local()

    def __call__(self, event: Event) -> None:
        held = getattr(self._held, "events", None)
        if held is not None:
            held.append(event)
        else:
            self.callback(event)

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Keep this thread's events until the block ends (enter it outside the owner's lock)."""
        if getattr(self._held, "events", None) is not None:  # nested: the outer block delivers
            yield
            return
        self._held.events = []
        try:
            yield
        finally:
            events, self._held.events = self._held.events, None
            for event in events:
                try:
                    self.callback(event)
                except Exception:
                    log.exception("gpu_seg on_event callback raised for %s; ignored", event.kind.value)
