"""A minimal, bounds-checked, read-only FlatBuffers reader (enough for .tflite files and their metadata).

A FlatBuffer starts with a little-endian uint32 offset to its root table, optionally followed by
a 4-byte file identifier. A table starts with an int32 ``soffset`` back to its vtable; the vtable
holds uint16 sizes then one uint16 offset per field (0 = absent). Strings and vectors are reached
through uint32 offsets and start with a uint32 length. Every read here is checked against the
buffer, so a truncated or corrupt file raises :class:`FlatBufferError` instead of reading garbage.
"""

from __future__ import annotations

import struct

__all__ = ["FlatBufferError", "Table", "file_identifier", "root_table"]


class FlatBufferError(ValueError):
    """The bytes are not a well-formed FlatBuffer (out-of-range offset, bad vtable, ...)."""


def _unpack(fmt: str, buf: memoryview, pos: int) -> int | float:
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise FlatBufferError(f"read of {size} bytes at {pos} is outside the {len(buf)}-byte buffer")
    return struct.unpack_from(fmt, buf, pos)[0]


def file_identifier(data: bytes | memoryview) -> bytes:
    """The 4-byte file identifier that follows the root offset (may be meaningless if none was written)."""
    view = memoryview(data)
    if len(view) < 8:
        raise FlatBufferError(f"{len(view)} bytes are too few for a FlatBuffer")
    return bytes(view[4:8])


def root_table(data: bytes | memoryview) -> Table:
    """The root table of ``data``."""
    view = memoryview(data)
    return Table(view, int(_unpack("<I", view, 0)))


class Table:
    """One table: ``buf`` and the position of its start (its soffset to the vtable)."""

    __slots__ = ("_buf", "_pos", "_vtable", "_vtable_size")

    def __init__(self, buf: memoryview, pos: int) -> None:
        self._buf = buf
        self._pos = pos
        self._vtable = pos - int(_unpack("<i", buf, pos))
        self._vtable_size = int(_unpack("<H", buf, self._vtable))
        if self._vtable_size < 4 or self._vtable_size % 2:
            raise FlatBufferError(f"vtable at {self._vtable} has an invalid size {self._vtable_size}")

    def _field(self, index: int) -> int:
        """Absolute position of field ``index``, or 0 when the field is absent."""
        entry = 4 + 2 * index
        if entry >= self._vtable_size:
            return 0
        offset = int(_unpack("<H", self._buf, self._vtable + entry))
        return self._pos + offset if offset else 0

    def _indirect(self, pos: int) -> int:
        return pos + int(_unpack("<I", self._buf, pos))

    def has(self, index: int) -> bool:
        return self._field(index) != 0

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        """A scalar field (``fmt`` is a :mod:`struct` format such as ``"<b"``, ``"<I"``, ``"<q"``)."""
        pos = self._field(index)
        return _unpack(fmt, self._buf, pos) if pos else default

    def table(self, index: int) -> Table | None:
        pos = self._field(index)
        return Table(self._buf, self._indirect(pos)) if pos else None

    def string(self, index: int) -> str | None:
        raw = self.bytes(index)
        if raw is None:
            return None
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FlatBufferError(f"string field {index} is not UTF-8: {exc}") from None

    def _vector(self, index: int, element_size: int) -> tuple[int, int] | None:
        """``(start, length)`` of a vector field, checked to lie inside the buffer."""
        pos = self._field(index)
        if not pos:
            return None
        head = self._indirect(pos)
        length = int(_unpack("<I", self._buf, head))
        start = head + 4
        if start + length * element_size > len(self._buf):
            raise FlatBufferError(f"vector field {index} ({length} elements) runs past the buffer")
        return start, length

    def bytes(self, index: int) -> memoryview | None:
        """A ``[ubyte]`` vector (or a string's bytes) as a view into the buffer."""
        vector = self._vector(index, 1)
        if vector is None:
            return None
        start, length = vector
        return self._buf[start : start + length]

    def scalars(self, index: int, fmt: str) -> tuple[int | float, ...]:
        """A vector of scalars (``fmt`` is one :mod:`struct` code with byte order, e.g. ``"<i"``)."""
        size = struct.calcsize(fmt)
        vector = self._vector(index, size)
        if vector is None:
            return ()
        start, length = vector
        return struct.unpack_from(f"<{length}{fmt[-1]}", self._buf, start)

    def tables(self, index: int) -> list[Table]:
        vector = self._vector(index, 4)
        if vector is None:
            return []
        start, length = vector
        return [Table(self._buf, self._indirect(start + 4 * i)) for i in range(length)]
