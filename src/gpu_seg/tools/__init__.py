"""Tools around the library: the parity rule, the MediaPipe oracle and the engines of ``gpu-seg``.

==================  ===========================================================================
``parity``          how masks are judged against MediaPipe (tolerances, near ties)
``oracle``          real MediaPipe's CPU post-processing of any tensor (``mediapipe`` extra);
                    also reachable as ``gpu_seg.oracle``
``gl_report``       what GL context gpu_seg gets here (``gpu-seg info``)
``bench``           ``gpu-seg bench``: presets and tensors, gpu_seg and its peers, timing,
                    results and goals, machine metadata, the plot
``verify``          ``gpu-seg verify``: a seeded random battery checked against real MediaPipe
``soak``            ``gpu-seg soak``: many checked frames with real context losses
``memory``          resident memory as the soak measures it
``messages``        exception summaries and install hints
==================  ===========================================================================

Engines return data (dataclasses and plain dicts) and report progress through a callback; only
:mod:`gpu_seg.cli` prints. The library proper (processor, reference, GL pipeline) never imports
from here.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress"]

#: A progress callback of the engines: ``progress(steps, note)`` after ``steps`` more units of work
#: (frames, cases); ``note`` says what is running or how it is going.
Progress = Callable[[int, str], None]
