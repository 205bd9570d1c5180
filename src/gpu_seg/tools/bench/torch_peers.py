"""The PyTorch peers: the same maths on the CPU and, where CUDA exists, on the GPU.

Every PyTorch row computes what a PyTorch user would write (:func:`torch_masks`): ``softmax`` /
``sigmoid`` over the channels of the channels-last view of the HWC tensor, then
``F.interpolate(bilinear, align_corners=False)`` to planes; for the category mask the contiguous
NCHW logits are interpolated the same way and reduced with ``argmax`` (one channel: a threshold).

* ``torch``: PyTorch CPU, numpy in, numpy out (``from_numpy`` / ``.numpy()``).
* ``torch_cuda``: host -> host through CUDA: the numpy tensor is copied into a pinned host buffer,
  sent with ``non_blocking=True``, the masks come back into pinned host buffers with
  ``non_blocking=True``, then ``torch.cuda.synchronize()``; the masks are numpy views of those
  pinned buffers (preallocated outputs, as for the gpu_seg GL row).
* ``torch_cuda_resident``: the tensor is already on the GPU and the masks stay there; the timed
  call ends with ``torch.cuda.synchronize()``, so its wall time is the GPU work plus the launches.

The CUDA rows exist only where ``torch.cuda.is_available()``; :func:`cuda_status` says why not
elsewhere (it goes into the report's metadata).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np

from ...inputs import parse_activation
from ...types import Activation
from .cases import MODES, BenchCase
from .runner import BACKENDS, BackendUnavailableError, Runner, nominal_bytes_out

__all__ = ["CUDA_BACKENDS", "cuda_status", "torch_cuda_runner", "torch_masks", "torch_runner"]

#: The rows the ``torch_cuda`` peer brings, where CUDA is available.
CUDA_BACKENDS = ("torch_cuda", "torch_cuda_resident")
_NOT_INSTALLED = "PyTorch is not installed (optional peer: pip install torch)"


def one_class_threshold(activation: Activation) -> float:
    """The logit above which a one-class pixel is foreground (MediaPipe: activated value > 0.5)."""
    if activation is Activation.SIGMOID:
        return 0.0
    if activation is Activation.SOFTMAX:
        return -np.inf  # softmax of one channel is 1.0
    return 0.5


def _torch() -> tuple[Any, Any]:
    try:
        return importlib.import_module("torch"), importlib.import_module("torch.nn.functional")
    except ImportError as exc:
        raise BackendUnavailableError(_NOT_INSTALLED) from exc


@functools.cache
def cuda_status() -> dict[str, Any]:
    """Whether the CUDA rows run here: ``available``, and ``reason`` (why not) or ``device``."""
    try:
        torch, _ = _torch()
    except BackendUnavailableError as exc:
        return {"available": False, "reason": str(exc)}
    built = getattr(torch.version, "cuda", None)
    if not torch.cuda.is_available():
        why = "no CUDA device or driver" if built else "this PyTorch build has no CUDA"
        return {
            "available": False,
            "reason": f"torch.cuda.is_available() is False ({why}; torch {torch.__version__})",
        }
    return {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "cuda": built,
        "torch": torch.__version__,
    }


def torch_masks(
    torch: Any, functional: Any, nhwc: Any, activation: Activation, size: tuple[int, int], mode: str
) -> tuple[Any, Any]:
    """``(confidence planes (C, H, W) or None, category mask (H, W) uint8 or None)`` of the
    ``(H, W, C)`` tensor ``nhwc`` on its device, for output ``mode``; ``size`` is ``(width, height)``."""
    conf, cat = MODES[mode]
    width, height = size
    planes = mask = None
    with torch.inference_mode():
        if conf:
            # Channels-last view of the HWC tensor: the fastest input layout for the resize.
            x = nhwc.permute(2, 0, 1).unsqueeze(0)
            if activation is Activation.SOFTMAX:
                x = torch.softmax(x, dim=1)
            elif activation is Activation.SIGMOID:
                x = torch.sigmoid(x)
            up = functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
            planes = up[0].contiguous()
        if cat:
            # Contiguous NCHW: argmax(dim=1) is ~2x faster on it than on the channels-last view.
            x = nhwc.permute(2, 0, 1).unsqueeze(0).contiguous()
            up = functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
            if up.shape[1] == 1:
                mask = torch.where(up[0, 0] > one_class_threshold(activation), 0, 255).to(torch.uint8)
            else:
                mask = up[0].argmax(dim=0).to(torch.uint8)
    return planes, mask


def torch_runner(case: BenchCase, mode: str) -> Runner:
    """PyTorch CPU: numpy in (``from_numpy``), numpy out (``.numpy()``)."""
    torch, functional = _torch()
    activation = parse_activation(case.activation)
    tensor, size = case.tensor, case.output_size
    last: dict[str, Any] = {"conf": None, "cat": None}

    def call() -> None:
        planes, mask = torch_masks(torch, functional, torch.from_numpy(tensor), activation, size, mode)
        last["conf"] = None if planes is None else planes.numpy()
        last["cat"] = None if mask is None else mask.numpy()

    return Runner(
        "torch", BACKENDS["torch"], call, lambda: (last["conf"], last["cat"]), nominal_bytes_out(case, mode)
    )


def torch_cuda_runner(case: BenchCase, mode: str, resident: bool) -> Runner:
    """PyTorch CUDA, host -> host through pinned buffers, or resident (tensor and masks on the GPU)."""
    status = cuda_status()
    if not status["available"]:
        raise BackendUnavailableError(status["reason"])
    torch, functional = _torch()
    activation = parse_activation(case.activation)
    tensor, size = case.tensor, case.output_size
    device = torch.device("cuda")
    last: dict[str, Any] = {"conf": None, "cat": None}
    key = "torch_cuda_resident" if resident else "torch_cuda"

    if resident:
        on_gpu = torch.from_numpy(tensor).to(device)
        torch.cuda.synchronize()

        def call() -> None:
            last["conf"], last["cat"] = torch_masks(torch, functional, on_gpu, activation, size, mode)
            torch.cuda.synchronize()

        def outputs() -> tuple[np.ndarray | None, np.ndarray | None]:
            return tuple(None if m is None else m.cpu().numpy() for m in (last["conf"], last["cat"]))  # type: ignore[return-value]

    else:
        conf, cat = MODES[mode]
        width, height = size
        pinned_in = torch.empty(tensor.shape, dtype=torch.float32, pin_memory=True)
        staging = pinned_in.numpy()
        conf_host = torch.empty((case.channels, height, width), dtype=torch.float32, pin_memory=True)
        cat_host = torch.empty((height, width), dtype=torch.uint8, pin_memory=True)

        def call() -> None:
            np.copyto(staging, tensor)
            x = pinned_in.to(device, non_blocking=True)
            planes, mask = torch_masks(torch, functional, x, activation, size, mode)
            if planes is not None:
                conf_host.copy_(planes, non_blocking=True)
            if mask is not None:
                cat_host.copy_(mask, non_blocking=True)
            torch.cuda.synchronize()

        def outputs() -> tuple[np.ndarray | None, np.ndarray | None]:
            return (conf_host.numpy() if conf else None, cat_host.numpy() if cat else None)

    def close() -> None:
        last.clear()
        torch.cuda.empty_cache()

    return Runner(key, BACKENDS[key], call, outputs, nominal_bytes_out(case, mode), close)
