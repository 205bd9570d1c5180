"""A dependency-free progress bar for long command-line runs (writes to stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(total, "soak") as bar: bar.advance(1, "losses=3")``.

    Redraws at most every ``interval`` seconds; on a non-terminal stream it prints a line every
    10 % instead, so logs stay readable.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.total = max(1, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n)
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= self.interval or self.done == self.total:
                self._last_draw = now
                self._draw(note, end="\r")
        else:
            decile = self.done * 10 // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self._draw(note, end="\n")

    def _draw(self, note: str, end: str) -> None:
        width = 30
        filled = width * self.done // self.total
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "-" * (width - filled)
        text = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s eta {eta:5.1f}s {note}"
        self.stream.write(text.ljust(100)[:160] + end)
        self.stream.flush()

    def finish(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
