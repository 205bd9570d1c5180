"""``SegmentationPostprocessor.process_cuda``: validation, the frame across context losses, results."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ..errors import GLUnavailableError
from ..resident import device_frame, run_leased_frame
from ..supervisor import Generation
from ..types import Result
from .arrays import CudaArray, CudaTensor, cuda_tensor, parse_interface
from .interop import CudaBridge, NotCudaDeviceError
from .runtime import CudaError, check, runtime

if TYPE_CHECKING:
    from ..frame import Frame
    from ..postprocessor import SegmentationPostprocessor

__all__ = ["CudaMasks", "process_cuda"]


class CudaMasks:
    """One frame's masks as CUDA arrays that the caller owns (see :mod:`gpu_seg.cuda.arrays`).

    Attributes:
        confidence_masks: :class:`~gpu_seg.cuda.arrays.CudaArray` ``(masks, height, width)`` of the
            confidence dtype, or None when not requested.
        category_mask: ``CudaArray`` uint8 ``(height, width)``, or None when not requested.
        generation: the GL context generation that computed them (informational: the arrays are
            CUDA memory and stay valid after a context loss, a later frame or ``close()``).
        backend: ``"gl"``.
    """

    def __init__(self, confidence: CudaArray | None, category: CudaArray | None, generation: int) -> None:
        self.confidence_masks = confidence
        self.category_mask = category
        self.generation = generation
        self.backend = "gl"

    def to_host(self) -> Result:
        """Both masks copied to host memory, as a :class:`~gpu_seg.Result` (synchronous)."""
        return Result(
            None if self.confidence_masks is None else self.confidence_masks.to_host(),
            None if self.category_mask is None else self.category_mask.to_host(),
            "gl",
        )

    def __repr__(self) -> str:
        return f"<CudaMasks confidence={self.confidence_masks!r} category={self.category_mask!r}>"


def _usable_runtime() -> None:
    """Raise GLUnavailableError unless cuda-python imports and the CUDA driver sees a device."""
    rt = runtime()
    try:
        count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as exc:
        raise GLUnavailableError(f"CUDA is not usable on this machine: {exc}") from exc
    if not count:
        raise GLUnavailableError("CUDA is not usable on this machine: no CUDA device")


def process_cuda(pp: SegmentationPostprocessor, tensor: object, output_size: object) -> CudaMasks:
    """The body of ``SegmentationPostprocessor.process_cuda`` (see there)."""
    supervisor = pp._supervisor
    if supervisor is None:
        raise GLUnavailableError("a processor created with backend='cpu' has no GL side for CUDA interop")
    parse_interface(tensor)  # InputError naming the argument, before any CUDA requirement
    _usable_runtime()
    source = cuda_tensor(tensor)
    shape = (source.height, source.width, source.channels)
    frame = device_frame(pp, shape, output_size, supervisor.max_texture_size or 1 << 14)
    if pp._cuda is None:
        pp._cuda = CudaBridge(source.device)
    work = functools.partial(_attempt, pp._cuda, frame, source)
    try:
        (confidence, category, number), _ = run_leased_frame(pp, work)
    except NotCudaDeviceError as exc:
        raise GLUnavailableError(str(exc)) from None
    return CudaMasks(confidence, category, number)


def _attempt(
    bridge: CudaBridge, frame: Frame, source: CudaTensor, generation: Generation
) -> tuple[Generation, tuple[CudaArray | None, CudaArray | None, int]]:
    confidence, category = generation.session.run(lambda: bridge.run_frame(generation, frame, source))
    return generation, (confidence, category, generation.number)
