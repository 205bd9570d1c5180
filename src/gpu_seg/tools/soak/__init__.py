"""``gpu-seg soak``: long runs with every frame checked, real context losses, idle periods, output-size
churn, a forced CPU fallback, and the end-to-end segmenter on a video stream.

* :func:`soak` (``run``): random tensors through one processor (:class:`SoakReport`).
* :func:`segmenter_soak` (``segmenter``): an ``ImageSegmenter`` on a video made from real photos
  (``video``), checked against the same segmenter with ``backend="cpu"``.
* ``plan``: idle periods (:class:`IdlePlan`) and churn sizes; ``report``: what is measured.
"""

from __future__ import annotations

from .loop import default_budget
from .plan import IDLE_RELEASES, ChurnSizes, IdlePlan
from .report import IdlePeriod, Snapshot, SoakReport
from .run import DEFAULT_WARMUP, LOGIT_SCALE, compare, soak
from .segmenter import DEFAULT_FRAME_SIZE, SegmenterSoakReport, segmenter_soak
from .video import SkimageUnavailableError

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_WARMUP",
    "IDLE_RELEASES",
    "LOGIT_SCALE",
    "ChurnSizes",
    "IdlePeriod",
    "IdlePlan",
    "SegmenterSoakReport",
    "SkimageUnavailableError",
    "Snapshot",
    "SoakReport",
    "compare",
    "default_budget",
    "segmenter_soak",
    "soak",
]
