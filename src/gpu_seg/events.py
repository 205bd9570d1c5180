"""Events a processor reports about its GL side, and their delivery outside the processor's lock.

Events are recorded while the processor holds its lock and delivered to ``on_event`` after the
lock is released, on the thread whose frame produced them: a callback may call the processor
(``process()``, ``stats``) without re-entering a recovery half-way, and a callback that raises is
logged and changes nothing else.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Event", "EventKind", "EventLog", "EventQueue"]

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
