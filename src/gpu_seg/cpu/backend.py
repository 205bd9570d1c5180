"""The processor's CPU backend: the fast kernels where numba works, else the numpy reference.

Both compute exactly what :mod:`gpu_seg.reference` specifies. The fast path is warmed up (its
kernels compiled or loaded from numba's cache) on a background thread when the backend is made,
so the first CPU frame after a context loss does not pay a compilation, and :meth:`prepare` keeps
its sampling tables and scratch buffers ready for the geometry in use.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .. import forks, reference
from ..errors import ClosedError
from ..frame import Frame

__all__ = ["CPUBackend"]

log = logging.getLogger("gpu_seg")


class CPUBackend:
    """Computes validated frames on the CPU.

    Args:
        threads: worker threads of the fast path (``None``: the CPUs this process may use).
        warm: start compiling/loading the fast kernels now, on a background thread.

    Attributes:
        kind: ``"fast"`` (numba kernels, :mod:`gpu_seg.cpu`) or ``"reference"`` (numpy, when numba
            cannot be used; the reason is logged once).
    """

    def __init__(self, threads: int | None = None, warm: bool = True) -> None:
        from . import available, unavailable_reason

        self._fast = None
        self._closed = False
        self._geometry: tuple | None = None
        self._lock = threading.Lock()
        forks.renew_locks(self, "_lock")
        forks.track(self)
        if available():
            from .fast import FastCPU

            self._fast = FastCPU(threads)
            self.kind = "fast"
            if warm:
                threading.Thread(target=_warm_quietly, name="gpu_seg-cpu-warm", daemon=True).start()
        else:
            self.kind = "reference"
            log.warning("gpu_seg CPU frames use the numpy reference: %s", unavailable_reason())

    def _after_fork_in_child(self) -> None:
        """In a forked child: the numpy reference if the fork cut a compilation short (see
        :mod:`gpu_seg.cpu`)."""
        from . import available, unavailable_reason

        if self._fast is not None and not available():
            self._fast, self.kind = None, "reference"
            log.warning("gpu_seg CPU frames use the numpy reference: %s", unavailable_reason())

    def wait_until_warm(self) -> None:
        """Wait for the fast kernels' warm-up (at once when done; nothing for the reference)."""
        if self._fast is not None:
            from . import warm_up

            warm_up()

    @property
    def threads(self) -> int:
        """Threads a fast CPU frame uses (1 for the reference)."""
        return self._fast.threads if self._fast is not None else 1

    def prepare(self, frame: Frame) -> None:
        """Get the fast path ready for this frame's geometry (cheap when it did not change)."""
        if self._fast is None:
            return
        geometry = (frame.tensor.shape, frame.width, frame.height)
        with self._lock:
            if geometry == self._geometry:
                return
            self._geometry = geometry
        self._fast.prepare(frame.tensor.shape, frame.width, frame.height)

    def compute(self, frame: Frame, confidence: np.ndarray | None, category: np.ndarray | None) -> None:
        """Compute the frame's requested masks into the given arrays."""
        fast = self._fast
        if fast is None:
            reference.compute(frame, confidence, category)
            return
        self.wait_until_warm()  # at once when warm; waits for a warm-up still under way
        self.prepare(frame)
        self._check_open()
        if frame.confidence_channels is not None:
            assert confidence is not None
            fast.confidence_masks(
                frame.tensor,
                frame.activation,
                frame.width,
                frame.height,
                confidence,
                frame.confidence_format,
                frame.confidence_channels,
            )
            self._check_open()
        if frame.category:
            assert category is not None
            fast.category_mask(frame.tensor, frame.activation, frame.width, frame.height, category)
            self._check_open()

    def _check_open(self) -> None:
        """Between a frame's kernel calls: after :meth:`close`, stop the worker threads a call may
        have started again (the fast path restarts its pool on use) and end the frame."""
        if self._closed:
            assert self._fast is not None
            self._fast.close()
            raise ClosedError("the processor was closed during the frame")

    def close(self) -> None:
        """Stop the fast path's worker threads; a frame still computing ends with ClosedError."""
        self._closed = True
        if self._fast is not None:
            self._fast.close()


def _warm_quietly() -> None:
    from . import warm_up

    try:
        warm_up()
    except Exception:  # the first CPU frame will raise it where the caller sees it
        log.exception("gpu_seg fast CPU warm-up failed")
