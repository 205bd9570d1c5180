"""Short texts the tools share: the first line of an exception, and how to install each extra."""

from __future__ import annotations

__all__ = ["INSTALL_BENCH", "INSTALL_CLI", "INSTALL_MEDIAPIPE", "INSTALL_OPENCV", "first_line"]

INSTALL_MEDIAPIPE = 'pip install "gpu_seg[mediapipe]"'
INSTALL_BENCH = 'pip install "gpu_seg[bench]"'
INSTALL_CLI = 'pip install "gpu_seg[cli]"'
#: OpenCV is in no extra: mediapipe brings opencv-contrib-python, and two cv2 wheels clash.
INSTALL_OPENCV = "pip install opencv-python-headless (or any OpenCV wheel; mediapipe's serves too)"


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (shader build errors carry the whole source)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
