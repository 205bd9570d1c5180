"""Damaged input files, told from their bytes before a decoder guesses.

Decoders are forgiving in ways that hide damage. OpenCV decodes a cut JPEG with a warning and grey
where the data ended; FFmpeg's video reader decodes a cut GIF as every other row, and the last frame
of a cut AVI half from the frame before. So:

* :func:`still_image_kind` names a still image by its signature (whatever its file name says): such a
  file that no image decoder reads is damaged, and never handed to the video reader;
* :func:`jpeg_truncation` walks a JPEG's markers: its scans must end in its end-of-image marker
  (an EXIF thumbnail's own marker, inside its APP1 segment, does not count; bytes after the marker,
  such as a motion photo's video, are not looked at);
* :func:`container_truncation` checks that an AVI's RIFF chunks and an MP4/QuickTime file's
  top-level boxes fit in the file: both state their own lengths.
"""

from __future__ import annotations

import os
import re

__all__ = ["container_truncation", "jpeg_truncation", "still_image_kind"]

#: Leading bytes of still-image formats OpenCV or imageio read, and their names.
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
)
#: Bytes read to tell a file's kind.
HEAD_BYTES = 16

#: In a JPEG's entropy-coded data, a 0xFF that starts a marker: not a stuffed 0xFF00, not a
#: restart marker (0xFFD0-0xFFD7), not a fill byte before another 0xFF.
_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_SOS, _EOI = 0xDA, 0xD9
#: Markers without a length: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

#: Top-level box types an MP4/QuickTime file may start with.
_ISO_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
#: Top-level boxes of MP4/QuickTime files (ISO/IEC 14496-12, fragmented MP4, QuickTime): one of
#: these running past the end of the file is cut; anything else there is bytes appended to a whole
#: file (a tool's trailer), not looked at.
_ISO_TOP_BOXES = _ISO_FIRST_BOXES | frozenset(
    {b"moof", b"mfra", b"meta", b"uuid", b"sidx", b"ssix", b"styp", b"emsg", b"prft", b"pdin", b"jumb"}
)


def read_head(path: str | os.PathLike[str]) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of a file (fewer if it is shorter)."""
    with open(path, "rb") as stream:
        return stream.read(HEAD_BYTES)


def still_image_kind(head: bytes) -> str | None:
    """The still-image format whose signature ``head`` starts with (``"JPEG"``, ``"PNG"``, ...), or
    None. WebP is told by its RIFF form type; Netpbm (``P1``-``P7``) by its magic number and a
    whitespace after it."""
    for signature, kind in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "Netpbm"
    return None


def jpeg_truncation(data: bytes) -> str | None:
    """Why the JPEG ``data`` is cut short, or None when its markers end in an end-of-image marker
    after at least one scan (a segment's length or a scan running past the end is cut)."""
    if data[:2] != b"\xff\xd8":
        return "it does not start with a JPEG start-of-image marker"
    position, end, scanned = 2, len(data), False
    while True:
        position = data.find(b"\xff", position)  # bytes before a marker: skipped, as libjpeg does
        if position < 0:
            return "cut where a marker should be"
        while position < end and data[position] == 0xFF:  # fill bytes
            position += 1
        if position >= end:
            return "cut in a marker"
        marker = data[position]
        position += 1
        if marker == _EOI:
            return None if scanned else "it ends before any image data"
        if marker in _STANDALONE:
            continue
        if position + 2 > end:
            return "cut in a segment's length"
        position += int.from_bytes(data[position : position + 2], "big")
        if position > end:
            return f"cut in a segment (marker 0xFF{marker:02X})"
        if marker == _SOS:
            scanned = True
            found = _NEXT_MARKER.search(data, position)
            if found is None:
                return "its image data ends before the end-of-image marker"
            position = found.start()


def container_truncation(path: str | os.PathLike[str], size: int | None = None) -> str | None:
    """Why the AVI or MP4/QuickTime file at ``path`` is cut short (its chunks or boxes announce more
    bytes than the file has), or None (complete, or another kind of file: not judged).

    An AVI is RIFF chunks (``AVI `` and, past 1 GB, ``AVIX``); an MP4 top-level boxes, a box of size
    0 running to the end of the file. What follows the last chunk or box is not looked at."""
    size = os.path.getsize(path) if size is None else size
    with open(path, "rb") as stream:
        head = stream.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            return _riff_truncation(stream, size)
        if head[4:8] in _ISO_FIRST_BOXES:
            return _boxes_truncation(stream, size)
    return None


def _riff_truncation(stream, size: int) -> str | None:
    offset = 0
    while offset + 8 <= size:
        stream.seek(offset)
        header = stream.read(8)
        if header[:4] != b"RIFF":
            return None
        length = int.from_bytes(header[4:8], "little")
        offset += 8 + length + (length & 1)
        if offset - (length & 1) > size:
            return f"truncated AVI: the file has {size} bytes, its RIFF chunks {offset - (length & 1)}"
    return None


def _boxes_truncation(stream, size: int) -> str | None:
    offset = 0
    while offset + 8 <= size:
        stream.seek(offset)
        header = stream.read(16)
        length = int.from_bytes(header[:4], "big")
        if length == 0:  # to the end of the file
            return None
        if length == 1:
            if len(header) < 16:
                return None
            length = int.from_bytes(header[8:16], "big")
        if length < 8 or header[4:8] not in _ISO_TOP_BOXES:  # not a box: appended bytes
            return None
        offset += length
        if offset > size:
            kind = header[4:8].decode("latin-1")
            return f"truncated video: the file has {size} bytes, its boxes {offset} (box {kind!r} is cut)"
    return None
