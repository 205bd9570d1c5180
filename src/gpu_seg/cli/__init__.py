"""The ``gpu-seg`` command line: ``info``, ``bench``, ``verify``, ``soak``, ``segment``, ``view``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``: argument
parsing and output only; the work is done by the engines in :mod:`gpu_seg.tools`. Tables and
progress bars are drawn with rich (:mod:`.console`, the ``cli`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import InputError

COMMANDS = {
    "info": "print the GL renderer, version, limits and extensions of the owned EGL context",
    "bench": "time gpu_seg against MediaPipe CPU, OpenCV and PyTorch on model-like presets",
    "verify": "check the GL path and the numpy reference against real MediaPipe on a random battery",
    "soak": "run many frames with injected context losses and check every frame",
    "segment": "segment images and videos with a real model (default: MediaPipe's selfie model)",
    "view": "play a video, image or camera through the segmenter in a window, composited on the GPU",
}

#: Commands that draw their report and progress with rich (the ``cli`` extra). ``info`` and
#: ``--help`` print plain text and work without it.
RICH_COMMANDS = ("bench", "verify", "soak", "segment")

#: Exit status when the reader of stdout went away (``gpu-seg info | head -3``): 128 + SIGPIPE, what
#: a shell reports for any program stopped by a closed pipe.
PIPE_CLOSED_STATUS = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-seg",
        description="MediaPipe-exact segmentation post-processing on the GPU (GLSL, moderngl).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"gpu_seg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{name}")
        description = (module.__doc__ or "").replace("``", "")  # reST literals read as plain text in --help
        command = sub.add_parser(name, help=help_text, description=description)
        module.add_arguments(command)
        command.set_defaults(run=module.run, command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpu-seg`` console script.

    A closed stdout (or stderr) pipe ends the command quietly with :data:`PIPE_CLOSED_STATUS`; a
    stdout that cannot be written (a full disk) with a line on stderr and status 1. A stdout closed
    before the start (``>&-``) discards the output.
    """
    _open_closed_streams()
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here at the latest, not at interpreter exit
    except BrokenPipeError:
        _discard_output()
        return PIPE_CLOSED_STATUS
    except OSError as exc:
        if not _stdout_fails(exc):
            raise
        _discard_stdout()
        print(f"gpu-seg: cannot write to stdout: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _open_closed_streams() -> None:
    """Python leaves ``sys.stdout``/``sys.stderr`` None when the process started with that file
    descriptor closed: point them at /dev/null (nobody reads them)."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # for the rest of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")


def _stdout_fails(exc: OSError) -> bool:
    """Whether ``exc`` came from stdout: flushing it raises, or (the failed write may have been
    dropped from its buffer) an error a full or failing device gives, and a line break written and
    flushed raises too."""
    try:
        sys.stdout.flush()
    except OSError:
        return True
    if exc.filename is not None or exc.errno not in (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT):
        return False
    try:
        sys.stdout.write("\n")
        sys.stdout.flush()
    except OSError:
        return True
    return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        pass
    os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    if args.command in RICH_COMMANDS and not _rich_available():
        from ..tools.messages import INSTALL_CLI

        print(
            f"gpu-seg {args.command} draws its tables and progress with rich, which is not installed: "
            f"{INSTALL_CLI}",
            file=sys.stderr,
        )
        return 2
    try:
        with _interrupts():
            return int(args.run(args) or 0)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except InputError as exc:  # gpu_seg refused a value that came from an argument
        _argument_error(args.command_parser, exc)
        return 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, Slurm, systemd), raised in the main thread as Ctrl-C's
    ``KeyboardInterrupt`` is: a command stops between steps with its files consistent (as after
    Ctrl-C) and exits with 128 + SIGTERM."""


#: The interrupt a command's signal handler raised, until the command is over. Python drops an
#: exception raised where it cannot propagate (a weakref callback, ``__del__``, a gc callback:
#: "Exception ignored in ..."): a Ctrl-C landing while a context generation is freed was lost,
#: and the command went on. Each step of a command (its progress callback) raises it again.
_pending: list[type[KeyboardInterrupt]] = []


def _raise_interrupt(signum: int, frame: object) -> None:
    error = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    _pending[:] = [error]
    raise error()


def raise_pending_interrupt() -> None:
    """Raise the interrupt of this command again if one was raised (and maybe dropped) before."""
    if _pending:
        raise _pending[0]()


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """During the block SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`, each
    remembered for :func:`raise_pending_interrupt` (main thread only; elsewhere as before). A signal
    the process started with ignored stays ignored (a shell script's background job ignores SIGINT,
    so that a Ctrl-C for the job in the foreground does not stop it)."""
    _pending.clear()
    previous = {}
    unraisable_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_quiet_about_dropped_interrupts, unraisable_hook)
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is signal.SIG_IGN:  # inherited (a background job): kept
                continue
            previous[signum] = signal.signal(signum, _raise_interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = unraisable_hook
        _pending.clear()


@contextlib.contextmanager
def partial_report_on_interrupt(report: Callable[[Any], object]) -> Iterator[None]:
    """A command's engine interrupted in the block (Ctrl-C, SIGTERM) carries what it had done as its
    ``KeyboardInterrupt``'s ``partial_report``: ``report`` it, and let the interrupt go on."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        partial = getattr(interrupt, "partial_report", None)
        if partial is not None:
            report(partial)
        raise


def _quiet_about_dropped_interrupts(hook: Callable[[Any], object], unraisable: Any) -> None:
    """``sys.unraisablehook`` of a command: an interrupt its handler raised where Python drops it
    (printed as "Exception ignored in ..." with a traceback) is not printed: it is raised again at
    the command's next step. Anything else goes to ``hook``."""
    if _pending and unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        return
    hook(unraisable)


def _argument_error(parser: argparse.ArgumentParser, exc: InputError) -> None:
    """Report ``exc`` as argparse reports a bad argument (usage, then ``PROG: error: ...``), naming
    the command's option for the library argument where there is one (``output_size`` ->
    ``--output-size``)."""
    text = str(exc)
    option = "--" + exc.argument.replace("_", "-")
    if option in parser._option_string_actions:
        text = f"argument {option}: {text.removeprefix(f'{exc.argument}: ')}"
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {text}", file=sys.stderr)


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null, so that flushing them at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
            pass
    os.close(devnull)
