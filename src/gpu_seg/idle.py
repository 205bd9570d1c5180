"""The idle policy: release GPU resources after a while without frames.

One daemon thread per processor that asked for it (``idle_release_after``). It sleeps until
``after`` seconds have passed since the last frame, calls the release callback once, and then
waits for the next frame before it counts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["IdleWatch"]

log = logging.getLogger("gpu_seg")


class IdleWatch:
    """Calls ``on_idle`` once per idle period of at least ``after`` seconds.

    Args:
        after: seconds without :meth:`touch` before ``on_idle`` runs.
        on_idle: the release action; it runs on the watch's own thread.
    """

    def __init__(self, after: float, on_idle: Callable[[], None]) -> None:
        self.after = after
        self._on_idle = on_idle
        # Callers take the plain lock in a ``with`` (in C: an exception a signal handler raises in
        # the caller cannot keep it); the watch waits on the condition, never for good.
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._last_frame: float | None = None  # None: already released (or no frame yet)
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="gpu_seg-idle", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        """A frame arrived now."""
        with self._mutex:
            first = self._last_frame is None
            self._last_frame = time.monotonic()
            if first:
                self._wake.notify()

    def stop(self) -> None:
        with self._mutex:
            self._stopped = True
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _watch(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    if self._last_frame is None:
                        self._wake.wait(self.after)  # not for good: a touch cut short may not notify
                        continue
                    remaining = self._last_frame + self.after - time.monotonic()
                    if remaining <= 0:
                        self._last_frame = None
                        break
                    self._wake.wait(remaining)
                if self._stopped:
                    return
            try:
                self._on_idle()
            except Exception:  # keep watching; the processor logs the details
                log.exception("gpu_seg idle release failed")
