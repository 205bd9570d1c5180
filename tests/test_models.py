"""gpu_seg.models: the selfie models fetched with pip from the registry, verified and cached."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from gpu_seg import GpuSegError, models

from .segmenter_support import (
    UNREACHABLE_REGISTRY,
    environment,
    local_registry,
    selfie_model,
    session_cache,
    write_wheel,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("landscape", [False, True])
def test_real_download_then_cache_hit(landscape):
    spec = models.SELFIE_MODELS[landscape]
    path = selfie_model(landscape)  # a real pip download the first time in the session
    assert path == session_cache() / "models" / spec.filename
    assert path.stat().st_size == spec.size
    assert _sha(path) == spec.sha256
    stamp = path.stat().st_mtime_ns
    # A cache hit needs no registry: with pip pointed at a closed port it still returns the file.
    with environment({**UNREACHABLE_REGISTRY, "GPU_SEG_CACHE_DIR": str(session_cache())}):
        assert models.selfie_segmenter(landscape) == path
    assert path.stat().st_mtime_ns == stamp


def test_unreachable_registry_with_empty_cache_is_a_clear_error(tmp_path):
    with environment({**UNREACHABLE_REGISTRY, "GPU_SEG_CACHE_DIR": str(tmp_path / "cache")}):
        with pytest.raises(models.ModelFetchError) as info:
            models.selfie_segmenter()
    assert isinstance(info.value, GpuSegError)
    message = str(info.value)
    assert "could not be fetched" in message
    assert "could not be reached" in message
    assert "mediapipe==0.10.21" in message
    assert "mediapipe==0.10.14" not in message  # no point trying other versions of a dead registry
    assert not (tmp_path / "cache" / "models" / "selfie_segmentation.tflite").exists()


def _real_members() -> dict[str, bytes]:
    return {
        spec.member: selfie_model(landscape).read_bytes() for landscape, spec in models.SELFIE_MODELS.items()
    }


def test_corrupt_cached_file_is_fetched_again(tmp_path, caplog):
    cache = tmp_path / "cache"
    target = cache / "models" / "selfie_segmentation.tflite"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"TFL3 but not the model")
    write_wheel(tmp_path / "wheels", "0.10.21", _real_members())
    with environment({**local_registry(tmp_path / "wheels"), "GPU_SEG_CACHE_DIR": str(cache)}):
        with caplog.at_level(logging.WARNING, logger="gpu_seg"):
            assert models.selfie_segmenter() == target
    assert _sha(target) == models.SELFIE_MODELS[False].sha256
    assert "wrong sha256" in caplog.text
    assert not list(target.parent.glob("*.part"))  # the atomic write left no temporary file


def test_wheel_with_a_wrong_model_falls_back_to_the_next_version(tmp_path):
    good = _real_members()
    bad = {name: data[:-1] + bytes([data[-1] ^ 1]) for name, data in good.items()}
    write_wheel(tmp_path / "wheels", "0.10.21", bad)
    write_wheel(tmp_path / "wheels", "0.10.14", good)
    cache = tmp_path / "cache"
    with environment({**local_registry(tmp_path / "wheels"), "GPU_SEG_CACHE_DIR": str(cache)}):
        path = models.selfie_segmenter(landscape=True)
    assert _sha(path) == models.SELFIE_MODELS[True].sha256
    assert _sha(cache / "models" / "selfie_segmentation.tflite") == models.SELFIE_MODELS[False].sha256


def test_only_wrong_models_is_an_error_and_nothing_is_cached(tmp_path):
    bad = {name: b"not a model" for name in _real_members()}
    for version in models.WHEEL_VERSIONS:
        write_wheel(tmp_path / "wheels", version, bad)
    cache = tmp_path / "cache"
    with environment({**local_registry(tmp_path / "wheels"), "GPU_SEG_CACHE_DIR": str(cache)}):
        with pytest.raises(models.ModelFetchError, match="unexpected sha256"):
            models.selfie_segmenter()
    assert not (cache / "models" / "selfie_segmentation.tflite").exists()


def test_cache_dir_follows_the_platform(monkeypatch, tmp_path):
    monkeypatch.delenv("GPU_SEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "gpu_seg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.cache_dir() == tmp_path / ".cache" / "gpu_seg"
    monkeypatch.setattr("sys.platform", "darwin")
    assert models.cache_dir() == tmp_path / "Library" / "Caches" / "gpu_seg"
    monkeypatch.setattr("sys.platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert models.cache_dir() == tmp_path / "local" / "gpu_seg" / "Cache"
    monkeypatch.setenv("GPU_SEG_CACHE_DIR", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"


def test_a_python_without_pip_is_named_as_the_cause(tmp_path, monkeypatch):
    """In a virtual environment without pip (``venv --without-pip``, ``uv venv``), the error said
    "Check the network" and "pip exited with status 1" three times; the cause was dropped."""
    import subprocess
    import sys

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    monkeypatch.setattr(sys, "executable", str(bare / "bin" / "python"))
    with environment({"GPU_SEG_CACHE_DIR": str(tmp_path / "cache")}):
        with pytest.raises(models.ModelFetchError) as info:
            models.selfie_segmenter()
    message = str(info.value)
    assert "no pip" in message and str(bare) in message and "ensurepip" in message
    assert "network" not in message and message.count("mediapipe==") == 0
