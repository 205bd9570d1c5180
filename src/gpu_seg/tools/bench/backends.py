"""Which backends time a cell, and preparing one of them by its key."""

from __future__ import annotations

from .cases import MODES, BenchCase
from .end_to_end import E2E_MEDIAPIPE_PEER, E2E_PRESET, end_to_end_keys, end_to_end_runner
from .gpu_seg_backends import GPU_SEG_BACKENDS, ProcessorPool, gpu_seg_runner
from .peers import PEER_RUNNERS
from .runner import VARIANTS, Runner
from .torch_peers import CUDA_BACKENDS, cuda_status

__all__ = ["PEERS", "backends_for", "make_runner"]

#: The backends ``--backends`` chooses from; ``gl`` brings ``gl_alloc`` and the GL variants along,
#: ``torch_cuda`` its host->host and resident rows (only where CUDA is available).
PEERS = ("gl", "cpu", "reference", "opencv", "torch", "torch_cuda", "mediapipe")


def backends_for(case: BenchCase, mode: str, peers: tuple[str, ...], alloc: bool) -> list[str]:
    """Backend keys timed for one case and mode, in table order.

    ``gl_alloc``, ``gl_view`` and ``gl_async`` follow ``gl`` on model-like tensors when ``alloc``;
    ``torch_cuda`` stands for :data:`~.torch_peers.CUDA_BACKENDS`, left out where CUDA is not
    available (the report's metadata says why); the GL variants close the list for cases with
    ``variants`` in modes with confidence masks. The end-to-end case has rows of its own
    (:func:`.end_to_end.end_to_end_keys`).
    """
    if case.preset == E2E_PRESET:
        return end_to_end_keys(peers)
    keys: list[str] = []
    for key in peers:
        if key == "torch_cuda":
            keys.extend(CUDA_BACKENDS if cuda_status()["available"] else ())
            continue
        keys.append(key)
        if key == "gl" and alloc and case.content == "model-like":
            keys.extend(("gl_alloc", "gl_view", "gl_async"))
    confidence, _ = MODES[mode]
    if "gl" in peers and case.variants and confidence:
        keys.extend(VARIANTS)
    return keys


def make_runner(pool: ProcessorPool, key: str, case: BenchCase, mode: str) -> Runner:
    """Prepare backend ``key`` for ``case`` in output ``mode``.

    Raises:
        BackendUnavailableError: the backend cannot run here; the message says why.
        ValueError: ``key`` is not a backend.
    """
    if key in E2E_MEDIAPIPE_PEER:
        return end_to_end_runner(case, key)
    if key in GPU_SEG_BACKENDS:
        return gpu_seg_runner(pool, key, case, mode)
    if key in PEER_RUNNERS:
        return PEER_RUNNERS[key](case, mode)
    raise ValueError(f"unknown backend {key!r}")
