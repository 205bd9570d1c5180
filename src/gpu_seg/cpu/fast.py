"""The fast exact CPU path: :class:`FastCPU`.

It computes what :mod:`gpu_seg.reference` computes, bit for bit, with numba kernels on a small
thread pool of its own:

* confidence masks: the activation at tensor resolution (numba for the softmax's maximum and
  sum, numpy's ``exp``, the one the reference uses, so the values are identical), then OpenCV's
  ``INTER_LINEAR`` resize as two passes with precomputed taps (horizontal rows cached, then the
  vertical blend written straight into the output, encoded to float16/uint8 on the way);
* category mask: align-corners interpolation of the raw logits and the first-maximum argmax, with
  the per-cell shortcut (see :mod:`gpu_seg.cpu._category_kernels` for the exactness argument):
  cells whose four corners agree with a margin are filled without per-pixel work.

Threads split rows (tensor rows for the activation and the texel classes, output rows for the
resize and the category mask). Nothing here changes process-global state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from .. import forks
from ..frame import ConfidenceFormat
from ..inputs import parse_activation, parse_channels
from ..reference import SIGMOID_ONE_CLASS_THRESHOLD
from ..types import Activation
from . import _category_kernels as cat
from . import _confidence_kernels as conf
from ._geometry import category_geometry, resize_geometry
from ._pool import WorkerPool

__all__ = ["FastCPU", "default_threads"]

#: Tasks per thread: more than one evens out rows of uneven cost and threads slowed by other work.
TASKS_PER_THREAD = 3
#: Fewest rows per task, and fewest values (pixels x channels) per task: handing a task to a
#: thread costs tens of microseconds, more when other processes hold the cores.
MIN_ROWS_PER_TASK = 16
MIN_VALUES_PER_TASK = 1 << 16
#: Above this fraction of output pixels left to the per-pixel path, the category shortcut costs
#: more than it saves (its texel pass and per-cell tests; measured on i.i.d. noise: ~1.5x the
#: plain path), so the next frames skip it ...
SHORTCUT_MAX_UNSURE = 0.5
#: ... for this many frames, then try it again.
SHORTCUT_RETRY = 16
#: Bytes of float32 scratch per chunk of the dense category path (multi-class sigmoid).
DENSE_CHUNK_BYTES = 2 << 20

_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_RESIZE_KERNELS = {
    np.dtype(np.float32): conf.resize_float32,
    np.dtype(np.float16): conf.resize_float16,
    np.dtype(np.uint8): conf.resize_uint8,
}


def default_threads() -> int:
    """The CPUs this process may use (its affinity mask where the OS has one), at least 1."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        return counter() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view, so the kernels see one array type whatever the caller's flags."""
    view = array.view(np.ndarray)  # a plain ndarray even for subclasses (numba types those apart)
    view.flags.writeable = False
    return view


def _bands(rows: int, pieces: int) -> list[tuple[int, int]]:
    """``pieces`` (or fewer) consecutive ``[start, end)`` row ranges covering ``rows``."""
    pieces = max(1, min(pieces, rows // MIN_ROWS_PER_TASK))
    edges = [rows * i // pieces for i in range(pieces + 1)]
    return [(edges[i], edges[i + 1]) for i in range(pieces)]


def _sigmoid(values: np.ndarray, out: np.ndarray) -> None:
    """``out = 1 / (1 + exp(-values))`` in float32 with numpy's ufuncs, as the reference computes it
    (``out`` may be ``values``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        np.negative(values, out=out)
        np.exp(out, out=out)
        np.add(_ONE, out, out=out)
        np.divide(_ONE, out, out=out)


class FastCPU:
    """MediaPipe's CPU post-processing, exact and multi-threaded (numba).

    Args:
        threads: worker threads, the calling thread included; ``None`` means the CPUs this process
            may run on (:func:`default_threads`).
        shortcut: use the category shortcut: ``None`` decides per frame (only when the output has
            at least twice as many pixels as the tensor, and not for ``SHORTCUT_RETRY`` frames
            after one where more than ``SHORTCUT_MAX_UNSURE`` of the pixels were unsure: content
            without smooth regions), or force it on/off.

    Conventions: tensors are float32 C-contiguous ``(H, W, C)`` (channel-interleaved, row 0 at the
    top) and already validated; outputs are preallocated C-contiguous arrays: confidence
    ``(len(channels), height, width)`` of float32/float16/uint8, category ``(height, width)`` uint8.
    Confidence masks use half-pixel centres (OpenCV ``INTER_LINEAR``), the category mask
    align-corners. Methods may be called from any thread; calls on one instance run one at a time.
    """

    def __init__(self, threads: int | None = None, shortcut: bool | None = None) -> None:
        if threads is None:
            threads = default_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.shortcut = shortcut
        self._pool = WorkerPool(threads)
        self._pool.start()
        self._lock = threading.Lock()
        forks.renew_locks(self, "_lock")  # its pool renews itself
        self._scratch: dict[str, np.ndarray] = {}
        #: ``"cells"`` or ``"full"`` or ``"dense"``: how the last category mask was computed.
        self.last_category_strategy: str | None = None
        #: With ``"cells"``: the fraction of output pixels that still needed per-pixel work.
        self.last_unsure_fraction: float | None = None
        self._skip_shortcut = 0

    # ----------------------------------------------------------------------------- public
    def confidence_masks(
        self,
        tensor: np.ndarray,
        activation: Activation | str,
        width: int,
        height: int,
        out: np.ndarray,
        fmt: ConfidenceFormat | str | np.dtype | None = None,
        channels: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Write the confidence masks of ``channels`` (all by default, in the order given) to ``out``.

        The activation (softmax over every channel) runs at tensor resolution, then each selected
        plane is resized to ``(width, height)`` and stored as ``out.dtype`` (``fmt``, if given,
        must name the same dtype): float32 as is, float16 rounded to nearest even, uint8 as
        ``floor(v * 255 + 0.5)`` clamped, NaN -> 0. Returns ``out``.

        Raises:
            InputError (a ValueError): ``channels`` holds a non-integer or an index outside
                ``0 .. C-1`` (the kernels do not check indices).
            ValueError: ``out`` does not fit.
        """
        activation = parse_activation(activation)
        selected = np.array(parse_channels(channels, tensor.shape[2], "channels"), np.int64)
        dtype = out.dtype if fmt is None else ConfidenceFormat.parse(fmt, "fmt").dtype
        if out.dtype != dtype or out.shape != (selected.size, height, width) or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {dtype} {(selected.size, height, width)}")
        with self._lock:
            source = self._activate(np.ascontiguousarray(tensor, np.float32), activation)
            self._resize(_readonly(source), selected, width, height, out)
        return out

    def category_mask(
        self, tensor: np.ndarray, activation: Activation | str, width: int, height: int, out: np.ndarray
    ) -> np.ndarray:
        """Write the uint8 category mask ``(height, width)`` to ``out`` and return it.

        Multi-class: index of the first maximum (modulo 256) of the align-corners interpolated
        logits (sigmoid applied first when the activation is sigmoid). One channel: 0 where the
        value is > 0.5, else 255 (sigmoid: where MediaPipe's float32 sigmoid is > 0.5, i.e. the logit
        > ``SIGMOID_ONE_CLASS_THRESHOLD``, see :mod:`gpu_seg.reference`).
        """
        activation = parse_activation(activation)
        if out.dtype != np.uint8 or out.shape != (height, width) or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 {(height, width)}")
        tensor = _readonly(np.ascontiguousarray(tensor, np.float32))
        mask = out.view(np.ndarray)  # a plain ndarray even for subclasses (numba types those apart)
        with self._lock:
            if tensor.shape[2] > 1 and activation is Activation.SIGMOID:
                self._category_dense(tensor, width, height, mask)
            else:
                self._category_cells(tensor, activation, width, height, mask)
        return out

    def prepare(self, tensor_shape: tuple[int, int, int], width: int, height: int) -> None:
        """Get ready for frames of this geometry without computing one: sampling tables, scratch
        buffers (pages touched) and worker threads. Optional; cheap when nothing changed. Calling
        it whenever the tensor shape or output size changes keeps a first CPU frame (a fallback
        after a context loss, say) close to steady-state time."""
        h, w, c = (int(v) for v in tensor_shape)
        with self._lock:
            self._pool.start()
            resize_geometry(h, w, width, height)
            category_geometry(h, w, width, height)
            self._buffer("activated", (h, w, c), np.float32, touch=True)
            for name, dtype in (("klass", np.int32), ("gap", np.float32), ("scale", np.float32)):
                self._buffer(name, (h, w), dtype, touch=True)

    def close(self) -> None:
        """Stop the worker threads and drop the scratch buffers (a later call starts them again)."""
        with self._lock:
            self._pool.close()
            self._scratch.clear()

    def __enter__(self) -> FastCPU:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- helpers
    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type, touch: bool = False) -> np.ndarray:
        """A scratch array kept between frames (one per name: bounded); ``touch`` faults its pages in."""
        array = self._scratch.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = np.empty(shape, dtype)
            if touch:
                array.fill(0)
            self._scratch[name] = array
        return array

    def _pieces(self, values: int) -> int:
        """How many tasks a pass over ``values`` (pixels x channels) is split into."""
        if self.threads == 1:
            return 1
        return max(1, min(self.threads * TASKS_PER_THREAD, values // MIN_VALUES_PER_TASK))

    def _activate(self, tensor: np.ndarray, activation: Activation) -> np.ndarray:
        """The activated tensor, ``(H, W, C)`` float32 (the tensor itself for ``none``)."""
        if activation is Activation.NONE:
            return tensor
        values = self._buffer("activated", tensor.shape, np.float32)
        bands = _bands(tensor.shape[0], self._pieces(tensor.size))
        source = _readonly(tensor)

        def task(i: int) -> None:
            y0, y1 = bands[i]
            if activation is Activation.SIGMOID:
                _sigmoid(tensor[y0:y1], values[y0:y1])
                return
            conf.softmax_shift(source, y0, y1, values)
            with np.errstate(over="ignore", invalid="ignore"):
                np.exp(values[y0:y1], out=values[y0:y1])
            conf.softmax_normalise(values, y0, y1)

        self._pool.run(task, len(bands))
        return values

    def _resize(
        self, source: np.ndarray, selected: np.ndarray, width: int, height: int, out: np.ndarray
    ) -> None:
        h, w, _ = source.shape
        geometry = resize_geometry(h, w, width, height)
        kernel = _RESIZE_KERNELS[out.dtype]
        target = out.view(np.ndarray) if out.dtype != np.float16 else out.view(np.uint16).view(np.ndarray)
        args = geometry.kernel_args()
        bands = _bands(height, self._pieces(height * width * selected.size))

        def task(i: int) -> None:
            r0, r1 = bands[i]
            kernel(source, selected, *args, r0, r1, target)

        self._pool.run(task, len(bands))

    def _use_shortcut(self, tensor: np.ndarray, width: int, height: int) -> bool:
        if self.shortcut is not None:
            return self.shortcut
        h, w, _ = tensor.shape
        if width * height < 2 * h * w:
            return False
        if self._skip_shortcut > 0:
            self._skip_shortcut -= 1
            return False
        return True

    def _category_cells(
        self, tensor: np.ndarray, activation: Activation, width: int, height: int, out: np.ndarray
    ) -> None:
        """Category mask with the shortcut (where it pays) and per-pixel argmax or threshold."""
        h, w, channels = tensor.shape
        geometry = category_geometry(h, w, width, height)
        sigmoid_one_class = channels == 1 and activation is Activation.SIGMOID
        threshold = SIGMOID_ONE_CLASS_THRESHOLD if sigmoid_one_class else _HALF  # one channel
        shortcut = self._use_shortcut(tensor, width, height)
        klass = self._buffer("klass", (h, w), np.int32)
        gap = self._buffer("gap", (h, w), np.float32)
        scale = self._buffer("scale", (h, w), np.float32)
        if shortcut:
            texel_bands = _bands(h, self._pieces(tensor.size))

            def texel_task(i: int) -> None:
                cat.texel_classes(tensor, threshold, *texel_bands[i], klass, gap, scale)

            self._pool.run(texel_task, len(texel_bands))
        bands = _bands(height, self._pieces(height * width * (1 if shortcut else channels)))
        g = geometry
        unsure = [0] * len(bands)

        def task(i: int) -> None:
            r0, r1 = bands[i]
            unsure[i] = cat.category_rows(
                tensor, klass, gap, scale, g.xi0, g.xi1, g.xt, g.runs, g.yi0, g.yi1, g.yt,
                threshold, shortcut, r0, r1, out,
            )  # fmt: skip

        self._pool.run(task, len(bands))
        self.last_category_strategy = "cells" if shortcut else "full"
        self.last_unsure_fraction = sum(unsure) / (width * height) if shortcut else None
        if shortcut and self.shortcut is None and self.last_unsure_fraction > SHORTCUT_MAX_UNSURE:
            self._skip_shortcut = SHORTCUT_RETRY

    def _category_dense(self, tensor: np.ndarray, width: int, height: int, out: np.ndarray) -> None:
        """Multi-class sigmoid: interpolate, numpy's sigmoid, then the argmax (no shortcut)."""
        bands = _bands(height, self._pieces(height * width * tensor.shape[2]))

        def task(i: int) -> None:
            self._dense_rows(tensor, *bands[i], out)

        self._pool.run(task, len(bands))
        self.last_category_strategy = "dense"
        self.last_unsure_fraction = None

    def _dense_rows(self, tensor: np.ndarray, r0: int, r1: int, out: np.ndarray) -> None:
        """Rows ``r0 <= r < r1`` through the activated values, chunk by chunk (bounded scratch)."""
        h, w, channels = tensor.shape
        height, width = out.shape
        g = category_geometry(h, w, width, height)
        chunk = max(1, DENSE_CHUNK_BYTES // (4 * width * channels))
        values = np.empty((min(chunk, r1 - r0), width, channels), np.float32)
        for start in range(r0, r1, chunk):
            end = min(r1, start + chunk)
            part = values[: end - start]
            cat.interpolate_rows(tensor, g.xi0, g.xi1, g.xt, g.yi0, g.yi1, g.yt, start, end, part)
            _sigmoid(part, part)
            cat.classify_values(part, start, out)
