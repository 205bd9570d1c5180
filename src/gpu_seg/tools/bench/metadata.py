"""Where the figures were measured: CPU, memory, load, GL renderer, library versions, git commit."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from ... import __version__
from .torch_peers import cuda_status

__all__ = ["environment", "load_average"]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_version(module: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module), "__version__", None))
    except ImportError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: other work on the machine shows up here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _git(source: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout gpu_seg runs from, and whether tracked files have changes.

    Only a checkout that tracks ``source`` (this file) counts: an installed gpu_seg in a virtual
    environment inside another project's repository has no commit (None), not that project's.
    """
    source = Path(__file__).resolve() if source is None else source

    def git(*argv: str) -> str:
        command = ["git", "-C", str(source.parent), *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "--", source.name)
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def _threads() -> dict[str, Any]:
    threads: dict[str, Any] = {}
    try:
        threads["opencv"] = importlib.import_module("cv2").getNumThreads()
    except ImportError:
        pass
    try:
        threads["torch"] = importlib.import_module("torch").get_num_threads()
    except ImportError:
        pass
    from ... import cpu

    fast = cpu.info()
    threads["gpu_seg_cpu"] = fast.get("default_threads", 1)  # the fast CPU path (numba kernels)
    threads["gpu_seg_cpu_path"] = fast
    return threads


def environment(gl_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metadata`` of a report: time, platform, CPU and memory, load, GL (``gl_info`` without
    its extension list), environment variables that change the figures, thread counts of the
    peers, CUDA (whether the PyTorch CUDA rows run, and why not), versions and the git commit."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    gl = dict(gl_info or {})
    gl.pop("extensions", None)
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _memory_gib(),
        "load_average": load_average(),
        "gl": gl,
        "env": {
            k: os.environ[k]
            for k in ("LP_NUM_THREADS", "GPU_SEG_EGL_DEVICE", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
            if k in os.environ
        },
        "threads": _threads(),
        "cuda": cuda_status(),
        "versions": {
            "gpu_seg": __version__,
            "numpy": _version("numpy"),
            "opencv": _module_version("cv2"),
            "mediapipe": _version("mediapipe"),
            "moderngl": _version("moderngl"),
            "torch": _version("torch"),
            "matplotlib": _version("matplotlib"),
        },
        "git": _git(),
    }
