"""CUDA tensors in, CUDA arrays out, through CUDA-GL interop (optional extra ``cuda``: cuda-python).

``SegmentationPostprocessor.process_cuda`` is the entry point; :mod:`.interop` describes the data
path, :mod:`.arrays` the inputs accepted and the ownership of the results. Importing this package
does not import cuda-python; the first CUDA frame does.
"""

from __future__ import annotations

from .arrays import CudaArray
from .frames import CudaMasks
from .runtime import CudaError

__all__ = ["CudaArray", "CudaError", "CudaMasks"]
