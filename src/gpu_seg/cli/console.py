"""Terminal output of the ``gpu-seg`` commands: tables and progress bars drawn with rich.

rich comes with the ``cli`` extra (``pip install "gpu_seg[cli]"``); the library does not need it.
The commands that draw with it import this module when they run, so ``gpu-seg --help`` and
``gpu-seg info`` work without rich (``gpu_seg.cli.main`` names the extra when it is missing).

Reports go to stdout and progress bars to stderr. Text is never read as rich markup (error
messages and shader logs contain brackets). Tables keep their natural width whatever the width of
the terminal (a narrower terminal wraps their lines, as it would plain text; rich would cut cells
short instead). When stdout is not a terminal (a file, a pipe, a test) no colour codes are written
and lines carry no trailing spaces.
"""

from __future__ import annotations

import contextlib
import errno
import io
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..tools import Progress as ProgressCallback

__all__ = ["BAD", "GOOD", "MUTED", "Text", "progress_bar", "row", "stdout", "table"]

#: The width reports are laid out in: wide enough for any table of the commands.
REPORT_WIDTH = 400
#: Cell styles by meaning (ignored where colours are not written).
GOOD, BAD, MUTED = "green", "bold red", "dim"


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Leave a closed pipe to :func:`gpu_seg.cli.main`, as for any other write (rich itself
        would exit with status 1)."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


class _TrimmedLines(io.TextIOBase):
    """A text stream that drops the spaces rich pads a table's last column with."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_TRAILING_SPACES.sub("\n", text))  # rich writes whole lines
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


_TRAILING_SPACES = re.compile(r" +\n")


def stdout() -> Console:
    """A console on the current ``sys.stdout`` (tests replace it)."""
    stream = sys.stdout
    return _Console(
        file=stream if stream.isatty() else _TrimmedLines(stream),
        markup=False,
        highlight=False,
        emoji=False,
        width=REPORT_WIDTH,
        soft_wrap=True,
    )


def table(headers: Sequence[str], align: str) -> Table:
    """A table without outer borders; ``align`` holds ``l`` or ``r`` per column."""
    grid = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True, header_style="bold"
    )
    for header, side in zip(headers, align, strict=True):
        grid.add_column(header, justify="right" if side == "r" else "left", no_wrap=True)
    return grid


def row(grid: Table, *cells: str | Text) -> None:
    """Add a row of plain strings (never markup) or styled ``Text``."""
    grid.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


@contextlib.contextmanager
def progress_bar(total: int, label: str, enabled: bool = True) -> Iterator[ProgressCallback]:
    """A progress bar on stderr for ``total`` steps; yields the engines' callback, which also raises
    an interrupt that Python dropped since (:func:`~gpu_seg.cli.raise_pending_interrupt`).

    On a terminal the bar is redrawn as the work goes; elsewhere (a log file) only its final
    state is written. Not ``enabled``: nothing is drawn.
    """
    from . import raise_pending_interrupt

    if not enabled:

        def step(steps: int, note: str) -> None:
            raise_pending_interrupt()

        yield step
        return
    console = _Console(file=sys.stderr, markup=False, highlight=False, emoji=False)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        console=console,
    )
    task = bar.add_task(label, total=max(1, total), note="")

    def advance(steps: int, note: str) -> None:
        raise_pending_interrupt()
        bar.update(task, advance=steps, note=note)

    with bar:
        yield advance
