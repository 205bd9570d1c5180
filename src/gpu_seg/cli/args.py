"""Argument types shared by the ``gpu-seg`` commands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import stat
import threading
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..inputs import CPU_MAX_OUTPUT_DIM, physical_memory, seconds

__all__ = [
    "MAX_THREADS",
    "frame_rate",
    "memory_problem",
    "non_negative_float",
    "non_negative_int",
    "output_file",
    "output_size",
    "positive_int",
    "tensor_shape",
    "thread_count",
    "wait_seconds",
]

#: The most LiteRT threads ``--threads`` accepts: far more than any CPU has cores, far fewer than
#: the tens of thousands at which starting them fails (and LiteRT crashes).
MAX_THREADS = 1024


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def thread_count(text: str) -> int:
    """A positive number of threads, at most :data:`MAX_THREADS`."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_THREADS} threads")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite non-negative number")
    return value


def wait_seconds(text: str) -> float:
    """A positive number of seconds that Python can wait (as the library's ``seconds`` checks)."""
    try:
        return seconds(non_negative_float(text), "seconds")
    except InputError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {str(exc).removeprefix('seconds: ')}") from None


def frame_rate(text: str) -> float:
    """Frames per second, >= 0 (0: no limit), whose interval Python can wait."""
    value = non_negative_float(text)
    if value and 1.0 / value > threading.TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a frame every {1.0 / value:.3g} s is longer than the longest wait "
            f"({threading.TIMEOUT_MAX:.3g} s)"
        )
    return value


def output_file(text: str) -> str:
    """A file the command can write at the end of its run, checked before the run: not a folder, in
    a folder that exists, writable (a file that does not exist yet is created and removed again)."""
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r}: the folder {str(folder)!r} {what}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text!r} cannot be written (permission denied)")
        return text
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be created: {exc.strerror or exc}") from None
    os.close(fd)
    path.unlink(missing_ok=True)
    return text


def write_json(path: str, data: object, **options: Any) -> str | None:
    """Write ``data`` as JSON (``json.dumps`` ``options``) to ``path``; None, or why it could not be
    written (a full disk, its folder gone since the run began). A new file, or a plain one (not a
    link, one name, its mode kept), is written whole: ``PATH.partial``, then renamed over it; anything
    else (a symbolic link, a device or pipe such as ``/dev/stdout``, a file with other hard links, a
    folder that does not let a file be made) is written in place."""
    text = json.dumps(data, **options) + "\n"
    target = Path(path)
    try:
        if not _replace_whole(target, text):
            with open(target, "w", encoding="utf-8") as out:
                out.write(text)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def _replace_whole(target: Path, text: str) -> bool:
    """Write ``text`` to ``TARGET.partial`` and rename it over ``target`` if that is a new or plain
    file; False (nothing done) for anything else, or where ``.partial`` cannot be made."""
    try:
        status = os.lstat(target)
    except FileNotFoundError:
        status = None
    if status is not None and not (stat.S_ISREG(status.st_mode) and status.st_nlink == 1):
        return False
    partial = target.with_name(target.name + ".partial")
    try:
        stream = open(partial, "w", encoding="utf-8")  # closed below
    except PermissionError:  # the folder does not let a file be made: the file itself may be written
        return False
    try:
        with stream:
            stream.write(text)
        if status is not None:
            os.chmod(partial, stat.S_IMODE(status.st_mode))
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return True


def _bytes_text(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def memory_problem(needed: int, what: str) -> str | None:
    """Why ``what`` cannot run here when it needs at least ``needed`` bytes at once: more than this
    machine's RAM (None when it fits, or when the RAM is unknown)."""
    total = physical_memory()
    if total is None or needed <= total:
        return None
    return (
        f"{what} needs at least {_bytes_text(needed)} of memory at once, more than this machine has "
        f"({_bytes_text(total)})"
    )


def _sizes(text: str, count: int, form: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    if len(parts) != count:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form {form}")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form {form} (integers)") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be positive")
    return values


def output_size(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(width, height)``, each at most the largest output size of any backend."""
    width, height = _sizes(text, 2, "WxH")
    if max(width, height) > CPU_MAX_OUTPUT_DIM:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at most {CPU_MAX_OUTPUT_DIM}")
    return width, height


def tensor_shape(text: str) -> tuple[int, int, int]:
    """``HxWxC`` -> ``(H, W, C)``."""
    h, w, c = _sizes(text, 3, "HxWxC")
    return h, w, c
