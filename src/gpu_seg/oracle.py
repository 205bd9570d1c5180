"""``gpu_seg.oracle`` is :mod:`gpu_seg.tools.oracle` (real MediaPipe, CPU delegate, as an oracle),
importable under this shorter name too: ``from gpu_seg.oracle import mediapipe_postprocess``.

Importing it imports ``mediapipe`` (an optional dependency: ``pip install 'gpu_seg[test]'``).
"""

import sys

from .tools import oracle as _oracle

sys.modules[__name__] = _oracle  # one module object under both names (patching one patches both)
