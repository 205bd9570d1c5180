"""Results that are lent rather than owned: zero-copy views and frames in flight.

:class:`MaskView` is what :meth:`SegmentationPostprocessor.process_view` and
:meth:`PendingFrame.view` return: masks as read-only views of the memory the GPU wrote them into
(a persistently mapped readback buffer), with no copy, the way MediaPipe's ``MPMask`` lends its
data. :class:`PendingFrame` is what :meth:`SegmentationPostprocessor.submit` returns: a frame
whose GL work is queued, collected later.

Lifetime of a :class:`MaskView`:

* its arrays stay valid and unchanged for as long as any of them (or any array derived from
  them) is referenced: the buffer they live in is not reused before that, not even after
  :meth:`MaskView.release`, a context loss, :meth:`~SegmentationPostprocessor.trim` or
  :meth:`~SegmentationPostprocessor.close`. An owned context that lends views gets a second,
  never-current "keeper" context in its share group, so the buffer and its mapping survive even
  if the context itself is destroyed. The views hold the keeper themselves: a loss, a context
  release or ``close()`` destroys the context at once, and the keeper (with the share group and
  the buffer) goes when the last view does, even after the processor itself is gone. An attached
  (application) context must be kept alive by the application while it holds views;
* :meth:`MaskView.release` (or leaving its ``with`` block) ends the view: its attributes raise
  :class:`~gpu_seg.errors.ExpiredResultError` afterwards, and the buffer is reused as soon as
  no array taken from it is referenced any more;
* the ring has a few buffers (:attr:`gpu_seg.gl.readback.MappedReadback.MAX_SLOTS`, one of them
  kept for ordinary frames): holding more views than that raises
  :class:`~gpu_seg.errors.CapacityError` when the next view is asked for, never overwrites data.

Where results are not read back through mapped memory (llvmpipe's direct readback, the CPU path)
a view holds ordinary arrays that the processor owns no more (``zero_copy`` is False); the same
rules apply to its attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .errors import ExpiredResultError
from .types import Backend, Result

if TYPE_CHECKING:
    from .frame import Frame
    from .supervisor import InFlight

__all__ = ["MaskView", "PendingFrame"]


class MaskView:
    """Masks of one frame, lent as read-only arrays (see the module docstring).

    Attributes:
        backend: ``"gl"`` or ``"cpu"``.
        zero_copy: whether the arrays are views of the GPU's readback memory (no copy was made).
    """

    def __init__(
        self, confidence: np.ndarray | None, category: np.ndarray | None, backend: Backend, zero_copy: bool
    ) -> None:
        self._confidence = _read_only(confidence)
        self._category = _read_only(category)
        self.backend: Backend = backend
        self.zero_copy = zero_copy
        self._released = False

    @property
    def confidence_masks(self) -> np.ndarray | None:
        """``(C, height, width)`` read-only, C-contiguous (None when not requested)."""
        self._check()
        return self._confidence

    @property
    def category_mask(self) -> np.ndarray | None:
        """``(height, width)`` uint8, read-only; rows may be strided (None when not requested)."""
        self._check()
        return self._category

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """End the view (idempotent); its buffer is reused once no array taken from it is referenced."""
        self._released = True
        self._confidence = self._category = None

    def to_result(self) -> Result:
        """Owned copies of the masks (a :class:`~gpu_seg.types.Result`)."""
        self._check()
        confidence = None if self._confidence is None else self._confidence.copy()
        category = None if self._category is None else self._category.copy()  # C order, owned
        return Result(confidence, category, self.backend)

    def _check(self) -> None:
        if self._released:
            raise ExpiredResultError("this MaskView was released; its masks are no longer available")

    def __enter__(self) -> MaskView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else ("zero-copy" if self.zero_copy else "owned")
        return f"<MaskView backend={self.backend} {state}>"

    def __copy__(self) -> MaskView:
        """Copies (``copy``, ``deepcopy``) and pickles hold owned copies of the masks: read-only,
        ``zero_copy`` False; a released view's stay released."""
        if self._released:
            return _copied_view(None, None, self.backend, released=True)
        result = self.to_result()
        return _copied_view(result.confidence_masks, result.category_mask, self.backend, released=False)

    def __deepcopy__(self, memo: dict) -> MaskView:
        return self.__copy__()

    def __reduce__(self) -> tuple:
        copied = self.__copy__()
        return _copied_view, (copied._confidence, copied._category, self.backend, self._released)


def _copied_view(
    confidence: np.ndarray | None, category: np.ndarray | None, backend: Backend, released: bool
) -> MaskView:
    view = MaskView(confidence, category, backend, zero_copy=False)
    if released:
        view.release()
    return view


def _read_only(array: np.ndarray | None) -> np.ndarray | None:
    """A read-only view of ``array`` (which stays as it was: it may be the caller's own
    ``confidence_out``/``category_out``, written again by the next frame)."""
    if array is None:
        return None
    view = array.view()
    view.flags.writeable = False
    return view


class PendingFrame:
    """A frame submitted with :meth:`SegmentationPostprocessor.submit`, collected once.

    Collect it with :meth:`result` (owned arrays, or the ``confidence_out``/``category_out``
    given to ``submit``) or :meth:`view` (zero-copy). Collecting blocks until the GPU is done.
    A second collection raises :class:`~gpu_seg.errors.ExpiredResultError`; a collection that raised
    (an interrupt while it waited, a loss with ``backend="gl"``) may be retried, and computes the frame
    anew. The tensor given to ``submit`` must not change until the frame is collected: a frame hit by
    a context loss is recomputed from it. A pending frame that is dropped without being collected, or
    whose collection was cut short, frees its buffer.
    """

    def __init__(
        self,
        collect: Callable[[PendingFrame, bool], Result | MaskView],
        frame: Frame,
        confidence_dst: np.ndarray | None,
        category_dst: np.ndarray | None,
    ) -> None:
        self._collect = collect
        self.frame = frame
        self.confidence_dst = confidence_dst
        self.category_dst = category_dst
        self.flight: InFlight | None = None  #: set while the frame is queued on GL
        self.computed: Result | None = None  #: set when it was computed at submission
        self._collected = False
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> bool:
        """Whether the frame is queued on the GPU (False: it was computed at submission)."""
        return self.flight is not None

    @property
    def collected(self) -> bool:
        return self._collected

    def result(self) -> Result:
        """Wait for the frame and return its masks as owned arrays."""
        result = self._take(False)
        assert isinstance(result, Result)
        return result

    def view(self) -> MaskView:
        """Wait for the frame and return its masks as a zero-copy :class:`MaskView`.

        Falls back to owned arrays (``zero_copy`` False) where the results were not read back
        through mapped memory, or when ``confidence_out``/``category_out`` were given (the view's
        arrays are then read-only views of those, which stay writeable for the next frame).
        """
        result = self._take(True)
        assert isinstance(result, MaskView)
        return result

    def _take(self, lend: bool) -> Result | MaskView:
        taken = False
        try:  # before the mark: an interrupt just after it (signals are checked there) gives it back
            with self._lock:
                if self._collected:
                    raise ExpiredResultError("this PendingFrame was already collected")
                self._collected = taken = True
            return self._collect(self, lend)
        except BaseException:  # (an interrupt while it waited, a loss...): may be collected again,
            if taken:  # computed anew (its buffer was given up with its flight)
                self._collected = False
            raise

    def __repr__(self) -> str:
        state = "collected" if self._collected else ("in flight" if self.flight else "computed")
        return f"<PendingFrame {state}>"
