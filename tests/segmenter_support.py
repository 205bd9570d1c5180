"""Shared helpers for the model and segmenter tests.

The selfie models are fetched for real (pip, from the package registry) once per test session into
a temporary cache, so the developer's own cache is neither used nor touched.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from gpu_seg import models

#: pip settings that make the registry unreachable: nothing but a closed local port.
UNREACHABLE_REGISTRY: dict[str, str | None] = {
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "",
    "PIP_NO_INDEX": None,
    "PIP_RETRIES": "1",
}


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or with None, remove) environment variables for the duration of the block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


@functools.cache
def session_cache() -> Path:
    """A cache directory private to this test session (removed at exit)."""
    directory = Path(tempfile.mkdtemp(prefix="gpu_seg-test-cache-"))
    atexit.register(shutil.rmtree, directory, True)
    # A machine without the package registry (a GPU machine) can hand the tests a filled cache;
    # the files are still checked against their sha256 by gpu_seg.models when used.
    seeded = os.environ.get("GPU_SEG_TEST_MODEL_CACHE")
    if seeded:
        shutil.copytree(Path(seeded) / "models", directory / "models")
    return directory


def selfie_model(landscape: bool = False) -> Path:
    """The real selfie model, downloaded into the session cache on first use."""
    with environment({"GPU_SEG_CACHE_DIR": str(session_cache())}):
        return models.selfie_segmenter(landscape)


def write_wheel(folder: Path, version: str, members: Mapping[str, bytes]) -> Path:
    """A minimal ``mediapipe`` wheel holding ``members``, for a local pip ``--find-links`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mediapipe-{version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    info = f"mediapipe-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: mediapipe\nVersion: {version}\n")
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: gpu_seg-tests\nRoot-Is-Purelib: false\n"
            "Tag: cp311-cp311-manylinux_2_28_x86_64\n",
        )
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", "")
    return path


def local_registry(find_links: Path) -> dict[str, str | None]:
    """pip settings that offer only the wheels in ``find_links`` (no index at all)."""
    return {**UNREACHABLE_REGISTRY, "PIP_FIND_LINKS": str(find_links), "PIP_NO_INDEX": "1"}


def run_segment(argv: list[str]) -> int:
    """``gpu-seg segment ARGV`` in this process (the parser built from the command's module)."""
    import argparse

    from gpu_seg.cli import segment

    parser = argparse.ArgumentParser(prog="gpu-seg segment")
    segment.add_arguments(parser)
    return segment.run(parser.parse_args(argv))


def manifest_lines(out: Path) -> list[dict]:
    """The parsed lines of ``out/manifest.jsonl``."""
    import json

    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
