"""Files of ``gpu-seg segment``: finding inputs and naming outputs, reading images and videos, writing
outputs whole, encoding masks. Used by :mod:`.batch` and by ``gpu_seg.distributed``; OpenCV (``cv2``)
is imported when first needed.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import GpuSegError
from ..tools.messages import INSTALL_OPENCV
from .damage import jpeg_truncation, read_head, still_image_kind

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST",
    "PARTIAL_SUFFIX",
    "VIDEO_SUFFIXES",
    "LocalOutput",
    "ManifestError",
    "OpenCVUnavailableError",
    "Output",
    "encode_npy",
    "encode_png",
    "estimate_frames",
    "find_inputs",
    "is_video",
    "names_in_use",
    "opencv",
    "opencv_path",
    "output_names",
    "overlay",
    "read_image",
    "seek",
    "video_frame_count",
]

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
IMAGE_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".gif",
        ".ppm",
        ".pgm",
        ".pnm",
        ".jp2",
        ".exr",
    }
)
#: Suffix of a file being written (renamed to its name once complete).
PARTIAL_SUFFIX = ".partial"
#: The run's manifest in the output folder.
MANIFEST = "manifest.jsonl"
#: Names an input's outputs never get: they would leave the output folder or hit the manifest.
_RESERVED_NAMES = frozenset({"", ".", "..", MANIFEST})
#: An image's files are its name plus one of these (a video's: the folder of its name).
OUTPUT_SUFFIXES = (".mask.png", ".confidence.npy", ".overlay.png")
_IMAGE_OUTPUT_SUFFIXES = (".mask.png", ".overlay.png")  # the ones a folder search would take
#: Overlay tint (RGB) per class for multi-class models (class 0 is left untinted).
_PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    np.uint8,
)
_FOREGROUND_TINT = np.array([0, 255, 0], np.uint8)


class OpenCVUnavailableError(GpuSegError, ImportError):
    """Reading and writing image/video files needs OpenCV (``cv2``)."""


class ManifestError(GpuSegError, OSError):
    """The run's ``manifest.jsonl`` cannot be written (a full disk, a read-only folder): the run
    stops, since frames written from then on could not be listed."""


def opencv():
    """The ``cv2`` module, or :class:`OpenCVUnavailableError`."""
    try:
        import cv2
    except ImportError as exc:
        raise OpenCVUnavailableError(
            "images and videos are read and written with OpenCV, which only gpu_seg's mediapipe, bench and "
            f"test extras bring (with mediapipe): {INSTALL_OPENCV} ({exc})"
        ) from exc
    return cv2


def find_inputs(
    paths: Iterable[str | os.PathLike[str]], output_folders: Iterable[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Files named, plus the image and video files inside folders named (recursively, sorted).

    Symbolic links to files are read; links to folders are not followed (a link up the tree
    would pull in its siblings, two links to one folder would read it twice). Inside
    ``output_folders`` (the run's output folder, where earlier runs wrote) the masks and overlays
    (``*.mask.png``, ``*.overlay.png``) are outputs, not inputs; files named explicitly are always
    taken.
    """
    outputs = [os.path.realpath(folder) for folder in output_folders]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                child
                for child in path.rglob("*")
                if child.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
                and child.is_file()
                and not (outputs and _written_by_a_run(child, outputs))
            )
        else:
            found.append(path)
    return found


def _written_by_a_run(path: Path, output_folders: list[str]) -> bool:
    """Whether ``path`` is a mask or overlay under one of ``output_folders`` (real paths)."""
    if not path.name.endswith(_IMAGE_OUTPUT_SUFFIXES):
        return False
    folder = os.path.realpath(path.parent)
    return any(folder == root or folder.startswith(root + os.sep) for root in output_folders)


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether a file is read as a video (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def video_frame_count(path: str | os.PathLike[str]) -> int:
    """The container's frame count (a guess: 0 when it gives none or cannot be opened)."""
    cv2 = opencv()
    with opencv_path(path) as name:
        try:
            capture = cv2.VideoCapture(name)
        except cv2.error:
            return 0
        try:
            count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0
        finally:
            capture.release()
    return max(0, int(count)) if np.isfinite(count) else 0


@contextlib.contextmanager
def opencv_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """``path`` as OpenCV's bindings can take it, for the duration of the block.

    A name that is not valid UTF-8 (bytes the file system decoded with surrogate escapes: Latin-1
    names from old archives or SMB shares) crashes them (a segfault): such a file is opened through a
    symbolic link with a plain name (and the same suffix) in a temporary folder.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield text
        return
    with tempfile.TemporaryDirectory(prefix="gpu_seg-") as folder:
        link = os.path.join(folder, "input" + plain_suffix(text))
        os.symlink(os.path.abspath(text), link)
        yield link


def plain_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix of ``path`` without what OpenCV's bindings cannot take (characters that are not
    printable ASCII): what tells OpenCV a file's format."""
    return "".join(c for c in os.path.splitext(os.fspath(path))[1] if c.isascii() and c.isprintable())


def opencv_failure(exc: Exception) -> str:
    """A ``cv2.error``'s reason in one line (its assertion or message, and the function)."""
    reason = getattr(exc, "err", None) or str(exc).strip().splitlines()[-1]
    function = getattr(exc, "func", None)
    return f"{reason} ({function})" if function else reason


def estimate_frames(paths: Iterable[Path]) -> int:
    """Frames a run will segment: 1 per image, the container's frame count per video (a guess)."""
    return sum(max(1, video_frame_count(path)) if is_video(path) else 1 for path in paths)


def output_names(paths: Iterable[str | os.PathLike[str]], taken: set[str] | None = None) -> list[str]:
    """A unique output name per input, in order: the stem, else ``stem_ext``, else ``stem_2``...

    Args:
        paths: the inputs, in run order.
        taken: names already used (updated in place with the new ones).

    A name is never ``.``, ``..``, empty or the manifest's (a video ``...avi``, whose stem is
    ``..``, is named ``.._avi``): every output stays inside the output folder.
    """
    taken = set() if taken is None else taken
    numbers: dict[str, int] = {}  # per stem: every stem_i below it is taken already
    names = []
    for raw in paths:
        path = Path(raw)
        stem = path.stem
        candidates = (stem, f"{stem}_{path.suffix.lstrip('.')}")
        name = next((c for c in candidates if c not in _RESERVED_NAMES and c not in taken), None)
        if name is None:
            number = numbers.get(stem, 2)
            while f"{stem}_{number}" in taken:
                number += 1
            numbers[stem] = number + 1
            name = f"{stem}_{number}"
        taken.add(name)
        names.append(name)
    return names


def names_in_use(entries: Iterable[tuple[str, bool]]) -> set[str]:
    """The output names an output folder holds already, from its top-level ``(name, is_folder)``
    entries: every folder (a video's frames), and ``NAME`` of ``NAME.mask.png``,
    ``NAME.confidence.npy`` or ``NAME.overlay.png`` (a leftover ``.partial`` holds no name: it is
    no output, and the next write of that file replaces it)."""
    names = set()
    for name, is_folder in entries:
        if is_folder:
            names.add(name)
            continue
        for suffix in OUTPUT_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                names.add(name[: -len(suffix)])
    return names


class Output(Protocol):
    """Where output files go: ``write`` stores ``data`` whole under a ``/``-separated relative path.

    An output may also have ``remove(relative)`` (both of gpu_seg's have): a frame whose files could
    not all be written then takes back those that were, so that no file is left that the manifest
    does not list. gpu_seg's outputs also say which output names their folder holds already
    (``names_in_use()``), which a new run's names avoid.
    """

    def write(self, relative: str, data: bytes) -> None: ...


class LocalOutput:
    """Output files under a local folder; each written to ``FILE.partial``, then renamed over ``FILE``.

    A writer killed midway leaves at most a ``.partial`` file, which the next write of the same
    file replaces; a reader never sees half a file under its real name.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def write(self, relative: str, data: bytes) -> None:
        """Write ``FILE.partial``, then rename it; a write that fails (a full disk) removes it."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        try:
            with open(partial, "wb") as stream:
                stream.write(data)
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise

    def remove(self, relative: str) -> None:
        """Remove a file written before (nothing if it is not there)."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / relative).unlink()

    def names_in_use(self) -> set[str]:
        """Output names the folder holds from earlier runs (:func:`names_in_use`)."""
        try:
            with os.scandir(self.root) as entries:
                return names_in_use((entry.name, entry.is_dir()) for entry in entries)
        except OSError:  # missing, or not listable (writable only): nothing known to avoid
            return set()


def read_image(cv2, path: Path, name: str | None = None) -> np.ndarray | None:
    """RGB uint8 ``(H, W, 3)`` (EXIF orientation applied), or None when the file is no still image
    that OpenCV or imageio reads and has no still image's signature either (a video, maybe).
    ``name``: the file as errors name it (default: ``path``; a Ray worker's path is absolute).

    Raises:
        OSError: a still image (by its signature, whatever its name) that is damaged (a JPEG cut
            short, a file no decoder reads) or whose pixels are not 8- or 16-bit; or one OpenCV
            refused outright (``cv2.error``: a header announcing more pixels than OpenCV decodes,
            CV_IO_MAX_IMAGE_PIXELS), on which imageio is not tried.
    """
    shown = str(path) if name is None else name
    kind = still_image_kind(read_head(path))
    if kind == "JPEG":
        problem = jpeg_truncation(Path(path).read_bytes())
        if problem:
            raise OSError(f"truncated JPEG: {shown}: {problem}")
    with opencv_path(path) as plain:
        try:
            bgr = cv2.imread(plain, cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise OSError(f"OpenCV cannot read {shown}: {opencv_failure(exc)}") from None
    if bgr is not None:
        return np.ascontiguousarray(bgr[..., ::-1])
    pixels = _read_with_imageio(path)
    if pixels is not None and (pixels.ndim < 2 or pixels.size == 0):  # a plugin's answer to a cut file
        pixels = None
    if pixels is not None:
        rgb = _as_rgb8(pixels)
        if rgb is not None:
            return rgb
    if kind is None:
        return None
    if pixels is not None:
        raise OSError(f"{shown}: a {kind} image of {pixels.dtype} pixels; 8- and 16-bit images are read")
    raise OSError(f"cannot decode the {kind} image {shown}: it is truncated or corrupt")


def _read_with_imageio(path: Path) -> np.ndarray | None:
    """imageio's pixels of ``path`` (EXIF orientation applied where Pillow reads the file), or None."""
    try:
        import imageio.v3 as iio
    except ImportError:
        return None
    with warnings.catch_warnings():  # imageio's plugins warn while probing a file
        warnings.simplefilter("ignore")
        attempts: tuple[dict[str, Any], ...] = ({"plugin": "pillow", "rotate": True}, {})
        for options in attempts:
            try:
                return np.asarray(iio.imread(path, **options))
            except Exception:  # not Pillow's (or Pillow missing): imageio's other plugins
                continue
    return None


def seek(cv2, capture, path: str, start: int):
    """``capture`` positioned so that the next read returns frame ``start``.

    OpenCV seeks to the frame number (exact on the containers tried: MJPEG AVI, MPEG-4 Part 2 in
    MP4 and AVI); where the position it reports differs, the video is read from the start instead.
    """
    if start <= 0:
        return capture
    if capture.set(cv2.CAP_PROP_POS_FRAMES, start) and int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == start:
        return capture
    capture.release()
    capture = cv2.VideoCapture(path)
    for _ in range(start):
        if not capture.grab():
            break
    return capture


def encode_png(cv2, pixels: np.ndarray) -> bytes:
    try:
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
    except cv2.error as exc:
        raise OSError(f"OpenCV could not encode a PNG: {opencv_failure(exc)}") from None
    if not ok:
        raise OSError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _as_rgb8(pixels: np.ndarray) -> np.ndarray | None:
    """imageio's pixels as uint8 RGB (16-bit ones divided by 256 and rounded: OpenCV's own decoders
    differ by up to one level), or None for what is not an 8- or 16-bit still image."""
    if pixels.dtype == np.uint16:
        pixels = np.round(pixels / 256.0).clip(0, 255).astype(np.uint8)
    if pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 4:  # an animation: its first frame
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        return None
    return np.ascontiguousarray(pixels[..., :3])


def overlay(image: np.ndarray, category_mask: np.ndarray, one_class: bool, alpha: float = 0.5) -> np.ndarray:
    """The RGB image with the category mask tinted over it (uint8 ``(H, W, 3)``).

    One-class models (mask values 0 and 255): foreground (0) in green. Several classes: class
    k > 0 in a palette colour; class 0 (usually background) untinted.
    """
    out = image.copy()
    rows = max(1, _OVERLAY_BAND_PIXELS // max(1, image.shape[1]))
    for top in range(0, image.shape[0], rows):  # in bands: temporaries of a band, not of the image
        band = slice(top, top + rows)
        _blend(out[band], category_mask[band], one_class, alpha)
    return out


#: Pixels blended at a time by :func:`overlay`.
_OVERLAY_BAND_PIXELS = 1 << 16


def _blend(pixels: np.ndarray, category_mask: np.ndarray, one_class: bool, alpha: float) -> None:
    """Tint ``pixels`` (uint8 ``(h, W, 3)``) in place where the category mask says so."""
    if one_class:
        tinted = category_mask == 0
        tint = _FOREGROUND_TINT
    else:
        tinted = category_mask != 0
        classes = category_mask[tinted].astype(np.intp)
        tint = _PALETTE[1 + (classes - 1) % (len(_PALETTE) - 1)]
    # float32 where it is exact (alpha 0.5: halves of integers), else float64
    dtype = np.dtype(np.float32 if alpha == 0.5 else np.float64)
    blended = pixels[tinted].astype(dtype)
    blended *= np.asarray(1.0 - alpha, dtype)
    blended += tint.astype(dtype) * np.asarray(alpha, dtype)
    pixels[tinted] = np.round(blended, out=blended)
