"""Real segmentation models, fetched once from the package registry and cached.

The MediaPipe selfie-segmentation networks ship, with their MediaPipe metadata, inside the
``mediapipe`` wheels on PyPI (0.10.21, 0.10.14 and 0.10.9 hold byte-identical copies). On first
use :func:`selfie_segmenter` downloads one of those wheels with pip (``pip download --no-deps``,
nothing is installed), reads the model member out of it, checks its sha256 and stores it in the
cache; later calls return the cached file. The wheel itself is not kept.

Cache directory: ``$GPU_SEG_CACHE_DIR`` when set, else the platform's user cache
(``$XDG_CACHE_HOME/gpu_seg`` or ``~/.cache/gpu_seg`` on Linux, ``~/Library/Caches/gpu_seg`` on
macOS, ``%LOCALAPPDATA%\\gpu_seg\\Cache`` on Windows); models live in its ``models`` folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import GpuSegError

__all__ = ["SELFIE_MODELS", "ModelFetchError", "ModelSpec", "cache_dir", "model_bytes", "selfie_segmenter"]

log = logging.getLogger("gpu_seg")

#: Wheels that ship the selfie models, tried in this order.
WHEEL_VERSIONS = ("0.10.21", "0.10.14", "0.10.9")
#: Fixed wheel tags, so the download does not depend on the host's Python or platform (the model
#: files are identical in every wheel of a release).
_WHEEL_TAGS = (
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--abi=cp311",
    "--platform=manylinux_2_28_x86_64",
    "--platform=manylinux_2_17_x86_64",
    "--platform=manylinux2014_x86_64",
)
#: pip messages that mean the registry could not be reached (no point trying other versions).
_NETWORK_FAILURES = (
    "Failed to establish a new connection",
    "NewConnectionError",
    "ConnectTimeoutError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
)
_PIP_TIMEOUT_S = 900


class ModelFetchError(GpuSegError, RuntimeError):
    """A model is not cached and could not be fetched (registry unreachable, bad download)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model file inside the ``mediapipe`` wheels.

    Attributes:
        filename: name of the cached file.
        member: path of the file inside the wheel (a zip).
        sha256: hex digest the file must have.
        size: its size in bytes.
    """

    filename: str
    member: str
    sha256: str
    size: int


_SELFIE_DIR = "mediapipe/modules/selfie_segmentation/"

#: ``landscape -> spec``: square input [1,256,256,3] and landscape [1,144,256,3]; one channel.
SELFIE_MODELS: dict[bool, ModelSpec] = {
    False: ModelSpec(
        "selfie_segmentation.tflite",
        _SELFIE_DIR + "selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        249_505,
    ),
    True: ModelSpec(
        "selfie_segmentation_landscape.tflite",
        _SELFIE_DIR + "selfie_segmentation_landscape.tflite",
        "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        250_145,
    ),
}


def cache_dir() -> Path:
    """gpu_seg's cache directory (not created): ``$GPU_SEG_CACHE_DIR`` or the platform's default."""
    override = os.environ.get("GPU_SEG_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "gpu_seg" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "gpu_seg"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache") / "gpu_seg"


def selfie_segmenter(landscape: bool = False) -> Path:
    """The MediaPipe selfie-segmentation model (with its metadata), fetched on first use.

    Args:
        landscape: the landscape network (input 144x256) instead of the square one (256x256).

    Returns:
        Path of the verified ``.tflite`` in the cache.

    Raises:
        ModelFetchError: the model is not cached (or the cached copy is corrupt) and the registry
            could not provide it.
    """
    spec = SELFIE_MODELS[bool(landscape)]
    folder = cache_dir() / "models"
    target = folder / spec.filename
    if target.is_file():
        if _sha256(target.read_bytes()) == spec.sha256:
            return target
        log.warning("gpu_seg: cached %s has the wrong sha256; fetching it again", target)
    _fetch_selfie_models(folder)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch_selfie_models(folder: Path) -> None:
    """Download a wheel, store every selfie model it holds (both are verified); a cache that
    cannot be written is found before anything is downloaded."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".writable.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _unwritable_cache(folder, exc) from None
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu_seg-wheel-") as tmp:
        for version in WHEEL_VERSIONS:
            wheel, failure, unreachable = _download_wheel(version, Path(tmp))
            if failure == _NO_PIP:
                raise ModelFetchError(
                    f"the selfie segmentation model is not cached, and this Python ({sys.executable}) has no "
                    "pip to fetch it from the package registry with (`python -m pip`: No module named pip). "
                    f"Install pip (`python -m ensurepip`), or put the file in the cache ({folder}) yourself."
                )
            if wheel is None:
                failures.append(f"mediapipe=={version}: {failure}")
                if unreachable:
                    break
                continue
            try:
                _store_members(wheel, folder)
                return
            except (ModelFetchError, zipfile.BadZipFile, KeyError) as exc:
                failures.append(f"mediapipe=={version}: {exc}")
            except OSError as exc:  # the cache cannot be written (a full disk): no other wheel helps
                raise _unwritable_cache(folder, exc) from None
    raise ModelFetchError(
        "the selfie segmentation model is not cached and could not be fetched from the package "
        f"registry with pip (cache: {folder}). Check the network or pip's index settings, or put the "
        "file there yourself. pip said:\n" + "\n".join(failures)
    )


def _unwritable_cache(folder: Path, exc: OSError) -> ModelFetchError:
    return ModelFetchError(
        f"the selfie segmentation model cannot be stored in the cache {folder}: {exc.strerror or exc}. "
        "Set GPU_SEG_CACHE_DIR to a writable folder."
    )


#: ``_download_wheel``'s answer where the interpreter has no pip.
_NO_PIP = "no pip"


def _download_wheel(version: str, tmp: Path) -> tuple[Path | None, str, bool]:
    """``pip download`` one mediapipe wheel.

    Returns ``(wheel, "", False)``, or ``(None, why, unreachable)`` where ``unreachable`` says
    that pip could not connect to the registry at all.
    """
    dest = tmp / version
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        *_WHEEL_TAGS,
        "-d",
        str(dest),
        f"mediapipe=={version}",
    ]
    log.info("gpu_seg: fetching mediapipe==%s from the package registry for its model files", version)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"pip could not run: {exc}", True
    wheels = sorted(dest.glob("mediapipe-*.whl")) if dest.is_dir() else []
    if done.returncode == 0 and wheels:
        return wheels[0], "", False
    output = done.stderr + done.stdout
    if "No module named pip" in output:
        return None, _NO_PIP, True
    unreachable = any(marker in output for marker in _NETWORK_FAILURES)
    summary = [line for line in output.splitlines() if line.startswith("ERROR")][-2:]
    if unreachable:
        summary.insert(0, "the package registry could not be reached (connection failed)")
    return None, " | ".join(summary) or f"pip exited with status {done.returncode}", unreachable


def _store_members(wheel: Path, folder: Path) -> None:
    """Verify and store each selfie model of ``wheel`` atomically (write a temp file, rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for spec in SELFIE_MODELS.values():
            data = archive.read(spec.member)
            if _sha256(data) != spec.sha256:
                raise ModelFetchError(f"{spec.member} in {wheel.name} has an unexpected sha256")
            _write_atomically(folder / spec.filename, data)


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def model_bytes(model: bytes | str | os.PathLike[str] | None = None) -> bytes:
    """A model's bytes: ``model`` itself (bytes), the file it names, or the selfie model (None).

    Raises:
        GpuSegError: the file cannot be read (ModelFetchError: the default model cannot be had).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if model is None:
        model = selfie_segmenter()
    try:
        return Path(model).read_bytes()
    except (OSError, TypeError) as exc:
        shown = os.fsdecode(model) if isinstance(model, (str, os.PathLike)) else repr(model)
        raise GpuSegError(f"cannot read the model {shown}: {exc}") from None
