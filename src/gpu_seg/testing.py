"""Fault injection for tests, soak runs and applications that want to rehearse failures.

Every helper acts on real objects: :func:`lose_context` destroys the processor's real EGL
context; nothing here mocks GL.
"""

from __future__ import annotations

from .errors import GpuSegError
from .gl.session import OwnedSession
from .postprocessor import SegmentationPostprocessor
from .supervisor import GLSupervisor

__all__ = ["exhaust_loss_budget", "fail_next_context_creations", "fail_next_links", "lose_context"]


def lose_context(pp: SegmentationPostprocessor) -> None:
    """Destroy the processor's current GL context, as a driver reset would.

    The context is destroyed with ``eglDestroyContext`` on its own thread; the processor is not
    told. Its next ``process()`` must detect the loss, rebuild and recompute the frame.

    Raises:
        GpuSegError: the processor has no owned GL context right now (CPU backend, fallback,
            or an attached context, which belongs to the application).
    """
    with pp._lock():
        supervisor = pp._supervisor
        generation = supervisor.generation if supervisor is not None else None
        if generation is None or not isinstance(generation.session, OwnedSession):
            raise GpuSegError("lose_context needs a processor with a live owned GL context")
        generation.session.destroy_for_testing()


def fail_next_links(pp: SegmentationPostprocessor, n: int = 1) -> None:
    """Make the next ``n`` program builds fail the way a link on a lost context fails."""
    if n < 0:
        raise ValueError("n must not be negative")
    _supervisor(pp).faults.fail_links += n


def fail_next_context_creations(pp: SegmentationPostprocessor, n: int = 1) -> None:
    """Make the next ``n`` context creations fail (as on a machine without a usable GPU)."""
    if n < 0:
        raise ValueError("n must not be negative")
    _supervisor(pp).faults.fail_creations += n


def exhaust_loss_budget(pp: SegmentationPostprocessor) -> None:
    """Use up the processor's loss budget: its next context loss falls back (or raises for "gl")."""
    _supervisor(pp).recovery.bucket.exhaust()


def _supervisor(pp: SegmentationPostprocessor) -> GLSupervisor:
    if pp._supervisor is None:
        raise GpuSegError("a processor created with backend='cpu' has no GL side to inject faults into")
    return pp._supervisor
