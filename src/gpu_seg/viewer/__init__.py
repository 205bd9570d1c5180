"""``gpu-seg view``: a live window that segments a video, an image or a camera and composites the
result on the GPU (background blur or replacement, mask overlay), with a stats bar.

* :class:`Viewer` runs the loop: frames from a :class:`FrameSource` go through an
  :class:`~gpu_seg.ImageSegmenter` whose post-processor works in the window's own GL context
  (attached mode), and the :class:`Compositor` draws the picture in that context.
* :mod:`.effects` is the numpy specification of the picture (the GL output is tested against it),
  :mod:`.font` the bitmap font of the stats bar.
* Keys: ``L`` loses the window's context for real (destroys the window, opens a new one; the
  post-processor reports the loss, computes on the CPU for a frame, then is attached to the new
  context), ``E`` cycles the effect, ``Q`` or ``Esc`` quits.

Needs glfw, OpenCV and the segmenter's ``ai-edge-litert``, and a window system (X11, or Xvfb for
headless runs).
"""

from __future__ import annotations

from .app import FrameRecord, Viewer, ViewerOptions, ViewerReport, stats_line
from .compositor import Compositor
from .effects import Effect, composite, foreground_probability
from .layout import Layout, plan_layout
from .sources import FrameSource, fit_image, open_source, read_image, save_image
from .window import ViewerError

__all__ = [
    "Compositor",
    "Effect",
    "FrameRecord",
    "FrameSource",
    "Layout",
    "Viewer",
    "ViewerError",
    "ViewerOptions",
    "ViewerReport",
    "composite",
    "fit_image",
    "foreground_probability",
    "open_source",
    "plan_layout",
    "read_image",
    "save_image",
    "stats_line",
]
