"""Where a distributed run's outputs go: a local (or shared) folder, or a pyarrow filesystem URI.

* A path (``/mnt/shared/masks``): files are written as by the single-process command
  (:class:`~gpu_seg.segmenter.files.LocalOutput`: whole files, renamed into place). On a cluster of
  several machines it must be a filesystem every worker and the driver mount at the same path.
* A URI (``s3://bucket/masks``, ``gs://...``, ``hdfs://...``, ``file:///...``): any filesystem
  ``pyarrow.fs.FileSystem.from_uri`` opens; each worker writes its files there directly, each
  file in one stream (object stores make it visible only once complete; elsewhere it is written
  to ``FILE.partial`` and moved over ``FILE``).

The manifest is written by the driver alone (:class:`Manifest`): appended to, as by the
single-process command. On a URI, where objects cannot be appended to, the earlier manifest is
read and written back first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import InputError
from ..segmenter.files import MANIFEST, PARTIAL_SUFFIX, LocalOutput, ManifestError, names_in_use

__all__ = ["MANIFEST", "Manifest", "PyArrowOutput", "is_uri", "open_output", "output_label"]

#: pyarrow file systems whose objects appear only once written whole (``FileSystem.type_name``).
_OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})


def is_uri(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` names a pyarrow filesystem (``scheme://...``) rather than a local path."""
    return "://" in str(out)


def output_label(out: str | os.PathLike[str]) -> str:
    """``out`` as it is sent to the workers: a URI as given, a path made absolute."""
    return str(out) if is_uri(out) else str(Path(out).absolute())


class PyArrowOutput:
    """Output files on a ``pyarrow.fs`` filesystem under ``base`` (each written in one stream)."""

    def __init__(self, filesystem: Any, base: str) -> None:
        self.filesystem = filesystem
        self.base = base.rstrip("/")

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def write(self, relative: str, data: bytes) -> None:
        """Write the file in one stream. On a file system that shows a file while it is written
        (``file://``, HDFS: not an object store), to ``FILE.partial``, then moved over ``FILE``: a
        writer killed midway leaves no half file under the real name; a write that fails removes it."""
        path = self.path(relative)
        self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if self.filesystem.type_name not in _OBJECT_STORES:
            self._write_then_move(path, data)
            return
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(data)

    def _write_then_move(self, path: str, data: bytes) -> None:
        partial = path + PARTIAL_SUFFIX
        try:
            with self.filesystem.open_output_stream(partial) as stream:
                stream.write(data)
            self.filesystem.move(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.filesystem.delete_file(partial)
            raise

    def remove(self, relative: str) -> None:
        """Remove a file written before (nothing if it is not there)."""
        import pyarrow.fs as pafs

        path = self.path(relative)
        if self.filesystem.get_file_info(path).type == pafs.FileType.File:
            self.filesystem.delete_file(path)

    def names_in_use(self) -> set[str]:
        """Output names the prefix holds from earlier runs (see ``files.names_in_use``)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.base, recursive=False, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        return names_in_use((info.base_name, info.type == pafs.FileType.Directory) for info in infos)

    def read(self, relative: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        import pyarrow.fs as pafs

        path = self.path(relative)
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.filesystem.open_input_stream(path) as stream:
            return stream.read()


def open_output(out: str | os.PathLike[str]) -> LocalOutput | PyArrowOutput:
    """The :class:`~gpu_seg.segmenter.files.Output` for a path or URI (see the module notes).

    Raises:
        InputError("out"): a URI pyarrow cannot open (unknown scheme, pyarrow missing).
    """
    if not is_uri(out):
        return LocalOutput(out)
    try:
        import pyarrow.fs as pafs

        filesystem, base = pafs.FileSystem.from_uri(str(out))
    except (ImportError, ValueError, OSError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
        raise InputError("out", f"cannot open the output URI {out!r}: {exc}") from None
    return PyArrowOutput(filesystem, base)


class Manifest:
    """The run's ``manifest.jsonl``, appended to line by line (see the module notes).

    Raises:
        ManifestError: it cannot be opened, written or flushed (a full disk, a read-only folder).
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        output = open_output(out)
        self._stream: IO[str] | Any
        self.label = f"{output_label(out).rstrip('/')}/{MANIFEST}"
        with self._errors("open"):
            if isinstance(output, PyArrowOutput):
                earlier = output.read(MANIFEST) or b""
                output.filesystem.create_dir(output.base, recursive=True)
                self._binary = True
                self._stream = output.filesystem.open_output_stream(output.path(MANIFEST))
                self._stream.write(earlier)
            else:
                Path(out).mkdir(parents=True, exist_ok=True)
                self._binary = False
                self._stream = open(Path(out) / MANIFEST, "a", encoding="utf-8")

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ManifestError(f"cannot {action} the manifest {self.label}: {exc.strerror or exc}") from None

    def write(self, line: str) -> None:
        """Add one line (given without its newline)."""
        text = line + "\n"
        with self._errors("write"):
            self._stream.write(text.encode("utf-8") if self._binary else text)

    def flush(self) -> None:
        if not self._binary:
            with self._errors("write"):
                self._stream.flush()

    def close(self) -> None:
        with self._errors("write"):
            self._stream.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
            return
        with contextlib.suppress(OSError):  # the error under way is the one to report
            self._stream.close()
