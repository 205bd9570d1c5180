"""Running the model: LiteRT (``ai-edge-litert``) with its default XNNPACK delegate.

The default delegate is what implements MediaPipe's custom op ``Convolution2DTransposeBias``
(the selfie models use it); with default delegates disabled such models fail to prepare.
``ai-edge-litert`` is optional (``pip install "gpu_seg[segmenter]"``) and imported on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import forks
from ..errors import GpuSegError, InputError

__all__ = ["LiteRTModel", "LiteRTUnavailableError"]

_INSTALL_HINT = 'pip install "gpu_seg[segmenter]"'


class LiteRTUnavailableError(GpuSegError, ImportError):
    """``ai-edge-litert`` (the model runtime) cannot be imported."""


def _interpreter_class() -> type:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise LiteRTUnavailableError(
            f"running a segmentation model needs ai-edge-litert: {_INSTALL_HINT} ({exc})"
        ) from exc
    return Interpreter


class LiteRTModel:
    """One interpreter for a single-input, single-mask-output segmentation model.

    Args:
        model: the ``.tflite`` bytes.
        num_threads: CPU threads for the interpreter (``None``: LiteRT's default).
        output_index: which of the model's outputs holds the masks (0 or 1).

    Attributes:
        input_shape: ``(1, h, w, 3)``, float32.
        output_shape: ``(1, h, w, C)``, float32.

    Raises:
        InputError("model"): LiteRT cannot load or prepare the model, its output is not
            ``(1, h, w, C)``, or a tensor is not float32 (quantised models are not supported).
        LiteRTUnavailableError: ``ai-edge-litert`` is not installed.
    """

    def __init__(self, model: bytes, num_threads: int | None = None, output_index: int = 0) -> None:
        self._model, self._num_threads = model, num_threads
        try:
            self._interpreter = self._new_interpreter()
        except (ValueError, RuntimeError) as exc:
            raise InputError("model", f"LiteRT cannot load this model: {exc}") from None
        self._lock = threading.Lock()
        self._renew = False  # in a forked child: a new interpreter before the next frame
        forks.track(self)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or not 0 <= output_index < len(outputs):
            raise InputError(
                "model", f"expected one input and a mask output, found {len(inputs)} and {len(outputs)}"
            )
        self._input = inputs[0]
        self._output = outputs[output_index]
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_shape = tuple(int(d) for d in self._output["shape"])
        if len(self.output_shape) != 4 or self.output_shape[0] != 1 or min(self.output_shape) < 1:
            raise InputError(
                "model",
                f"the mask output {self._output['name']!r} has shape {self.output_shape}, not (1, h, w, C)",
            )
        if np.dtype(self._output["dtype"]) != np.float32:
            raise InputError(
                "model", f"the mask output has type {np.dtype(self._output['dtype'])}; expected float32"
            )
        if self.input_dtype != np.float32:
            raise InputError("model", f"the input has type {self.input_dtype}; expected float32")

    def _new_interpreter(self) -> Any:
        interpreter = _interpreter_class()(model_content=self._model, num_threads=self._num_threads)
        interpreter.allocate_tensors()
        return interpreter

    def _after_fork_in_child(self) -> None:
        """In a forked child: a new lock, and a new interpreter before the next frame. The parent's
        is kept, never used nor freed here: its thread pool's threads are gone (freeing it crashed
        the child with ``num_threads`` > 2), and a parent thread that was inside :meth:`run` at the
        fork left views of its input tensor (LiteRT refuses to invoke while they live)."""
        if self._interpreter is not None:
            forks.park(self._interpreter)
            self._renew = True
        self._lock = threading.Lock()

    def run(self, fill_input: Callable[[np.ndarray], object]) -> np.ndarray:
        """Run once: ``fill_input(view)`` writes the input tensor in place; returns the float32 output.

        The returned array is ``(1, h, w, C)`` and belongs to the caller.
        """
        with self._lock:
            if self._renew and self._interpreter is not None:
                self._interpreter, self._renew = self._new_interpreter(), False
            interpreter = self._interpreter
            if interpreter is None:
                raise GpuSegError("the model was closed")
            view = interpreter.tensor(self._input["index"])()
            fill_input(view)
            del view  # LiteRT refuses to invoke while views of its buffers are alive
            try:
                interpreter.invoke()
                return interpreter.get_tensor(self._output["index"])
            except (ValueError, RuntimeError) as exc:  # a model LiteRT loads but cannot run
                raise InputError("model", f"LiteRT cannot run the model: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._interpreter = None
