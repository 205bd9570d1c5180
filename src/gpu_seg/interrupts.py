"""Holding Ctrl-C (SIGINT) and SIGTERM back while a step must not be cut in two.

A frame's files and its manifest line are written together or not at all; a call into MediaPipe runs
to its end: its Python wrapper waits for the C++ graph on a worker thread, and an interrupt raised in
the wait let ``close()`` free the graph under the running call (a segfault, seen when ``gpu-seg verify``
was interrupted). A signal that arrives meanwhile is raised again when the step ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["held"]


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the block: one arriving meanwhile is raised again when
    it ends, to the handlers that were there (an ignored one stays ignored). Python runs signal
    handlers in the main thread whichever thread the signal reached, so the handlers are swapped
    there; masking the main thread's signals would not do, other threads get them. Elsewhere than in
    the main thread, and for handlers installed outside Python, the block runs as it is."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(s) for s in signals]
    if threading.current_thread() is not threading.main_thread() or None in previous:
        yield
        return
    caught: list[int] = []
    for signum in signals:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in zip(signals, previous, strict=True):
            signal.signal(signum, handler)
        for arrived in dict.fromkeys(caught):
            signal.raise_signal(arrived)
