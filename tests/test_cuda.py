"""``process_cuda``: CUDA tensors in, CUDA arrays out through CUDA-GL interop.

The argument checks and the "no CUDA here" errors run everywhere. The interop tests need an NVIDIA GPU
whose EGL device is a CUDA device, PyTorch with CUDA and cuda-python; elsewhere they skip and say
which is missing (``benchmarks/cuda_check.py`` runs the same checks as a script on a GPU machine).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import gpu_seg
from gpu_seg import reference_postprocess, testing


class _Interface:
    """A stand-in with ``__cuda_array_interface__`` over a host array (no CUDA: argument checks)."""

    def __init__(self, array: np.ndarray, **overrides) -> None:
        self.array = array
        self.interface = {
            "shape": array.shape,
            "typestr": array.dtype.str,
            "data": (array.ctypes.data, False),
            "version": 3,
            "strides": None,
            **overrides,
        }

    @property
    def __cuda_array_interface__(self) -> dict:
        return self.interface


def _cuda_usable() -> str | None:
    """Why CUDA cannot be used here, or None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            rt = importlib.import_module(name)
            break
        except ImportError:
            continue
    else:
        return "cuda-python is not installed"
    error, count = rt.cudaGetDeviceCount()
    if error != rt.cudaError_t.cudaSuccess or not count:
        return f"no CUDA device ({error})"
    return None


@pytest.fixture(scope="module")
def pp():
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as processor:
        yield processor


def test_arguments_are_checked_before_cuda_is_needed(pp):
    tensor = np.zeros((4, 3, 2), np.float32)
    cases = [
        tensor,  # a host array
        [[1.0]],
        _Interface(tensor.astype(np.float64)),
        _Interface(np.zeros((2, 4, 3, 2), np.float32)),  # batch 2
        _Interface(tensor, strides=(4, 32, 96)),  # not C-contiguous
        _Interface(tensor, shape=(4, 0, 2)),
        # malformed interfaces
        _Interface(tensor, data=None),
        _Interface(tensor, data=()),
        _Interface(tensor, data=("0x10", False)),
        _Interface(tensor, shape="abc"),
        _Interface(tensor, shape=None),
        _Interface(tensor, shape=(4.5, 3, 2)),
        _Interface(tensor, strides="abc"),
        _Interface(tensor, strides=5),
        _Interface(tensor, stream="default"),
    ]
    for case in cases:
        with pytest.raises(gpu_seg.InputError) as info:
            pp.process_cuda(case)
        assert info.value.argument == "tensor"


class _DLPackOnCuda:
    """A DLPack producer that says its (host) array is on CUDA device 0: checks the parsing only."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return (2, 0)


def test_dlpack_capsules_are_read_field_by_field():
    from gpu_seg.cuda.dlpack import read_dlpack

    base = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    view = read_dlpack(base)
    assert (view.pointer, view.shape, view.dtype) == (base.ctypes.data, (2, 5, 6), (2, 32, 1))
    assert (view.device_type, view.device_id) == (1, 0) and view.c_contiguous
    sliced = base[:, 1:4, ::2]  # offset data, strides in elements
    view = read_dlpack(sliced)
    assert view.pointer == sliced.ctypes.data and view.shape == (2, 3, 3)
    assert view.strides == (30, 6, 2) and not view.c_contiguous
    assert read_dlpack(np.zeros((3, 4), np.float64)).dtype == (2, 64, 1)


def test_dlpack_inputs_are_checked_like_cuda_array_interfaces(pp):
    from gpu_seg.cuda.arrays import parse_interface

    tensor = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    assert parse_interface(_DLPackOnCuda(tensor)) == (tensor.ctypes.data, (4, 3, 2), None)
    assert parse_interface(_DLPackOnCuda(tensor[None]))[1] == (4, 3, 2)
    for case, message in (
        (tensor, "host memory"),  # numpy's DLPack says CPU
        (_DLPackOnCuda(tensor.astype(np.float64)), "not float32"),
        (_DLPackOnCuda(tensor[:, ::2]), "C-contiguous"),
        (_DLPackOnCuda(np.zeros((2, 4, 3, 2), np.float32)), "batch"),
    ):
        with pytest.raises(gpu_seg.InputError, match=message) as info:
            pp.process_cuda(case)
        assert info.value.argument == "tensor"


def test_a_cpu_processor_has_no_gl_for_cuda():
    with gpu_seg.SegmentationPostprocessor("none", backend="cpu") as cpu:
        with pytest.raises(gpu_seg.GLUnavailableError):
            cpu.process_cuda(_Interface(np.zeros((4, 3, 2), np.float32)))


def test_without_cuda_the_error_says_why(pp):
    """No cuda-python or no CUDA device: GLUnavailableError naming what is missing. With CUDA, a host
    pointer behind the interface is an InputError (CUDA sees host memory)."""
    fake = _Interface(np.zeros((4, 3, 2), np.float32))
    why = _cuda_usable()
    if why is None:
        with pytest.raises(gpu_seg.InputError, match="host memory"):
            pp.process_cuda(fake)
        return
    with pytest.raises(gpu_seg.GLUnavailableError, match=r"cuda-python|CUDA is not usable"):
        pp.process_cuda(fake)
    assert pp.process(np.zeros((4, 3, 2), np.float32)).backend == "gl"  # GL itself is unharmed


# ---------------------------------------------------------------------------------------- on a GPU
@pytest.fixture(scope="module")
def torch_cuda():
    why = _cuda_usable()
    if why is not None:
        pytest.skip(f"CUDA interop tests need CUDA: {why}")
    torch = pytest.importorskip("torch", reason="the CUDA interop tests make their tensors with PyTorch")
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda.is_available() is False")
    with gpu_seg.SegmentationPostprocessor("none", backend="gl") as probe:
        try:
            probe.process_cuda(torch.zeros((2, 2, 1), device="cuda"))
        except gpu_seg.GLUnavailableError as exc:
            pytest.skip(f"no CUDA-GL interop with this GL context: {exc}")
    return torch


def _assert_reference(result, tensor, activation, size, **options):
    want = reference_postprocess(tensor, activation, size, **options)
    tol = 2e-6 if activation != "none" else 0.0
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=tol, atol=tol)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


PRESETS = [((64, 64, 1), (160, 120), "sigmoid"), ((48, 48, 2), (96, 54), "softmax"),
           ((32, 32, 6), (128, 72), "softmax"), ((33, 33, 21), (120, 68), "softmax"),
           ((17, 13, 3), (31, 29), "none")]  # fmt: skip


@pytest.mark.parametrize("passes", ["compute", "fragment"])
@pytest.mark.parametrize(("shape", "size", "activation"), PRESETS)
def test_cuda_frames_match_reference_and_process(torch_cuda, shape, size, activation, passes):
    """Compute frames copy from the storage buffers, fragment frames from the textures."""
    tensor = (np.random.default_rng(shape[2]).standard_normal(shape) * 3).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor(activation, backend="gl", gl_passes=passes) as processor:
        masks = processor.process_cuda(torch_cuda.from_numpy(tensor).cuda(), size)
        ran = processor.stats["last_resident_passes"]
        assert ran == passes or (passes == "compute" and ran == "mixed"), ran  # mixed: llvmpipe's shortcut
        host = masks.to_host()
        _assert_reference(host, tensor, activation, size)
        expected = processor.process(tensor, size)
        np.testing.assert_array_equal(host.confidence_masks, expected.confidence_masks)
        np.testing.assert_array_equal(host.category_mask, expected.category_mask)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_cuda_confidence_formats_and_zero_copy_views(torch_cuda, dtype):
    tensor = (np.random.default_rng(3).standard_normal((20, 16, 5)) * 3).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", confidence_dtype=dtype) as processor:
        masks = processor.process_cuda(torch_cuda.from_numpy(tensor).cuda()[None], (37, 23))
        view = torch_cuda.as_tensor(masks.confidence_masks, device="cuda")
        assert view.data_ptr() == masks.confidence_masks.pointer  # no copy
        assert tuple(view.shape) == (5, 23, 37)
        expected = processor.process(tensor, (37, 23))
        got = view.cpu().numpy()
        np.testing.assert_array_equal(got.view(np.uint8), expected.confidence_masks.view(np.uint8))
        category = torch_cuda.as_tensor(masks.category_mask, device="cuda").cpu().numpy()
        np.testing.assert_array_equal(category, expected.category_mask)


def test_cuda_results_are_owned_and_outlive_later_frames(torch_cuda):
    tensor = (np.random.default_rng(4).standard_normal((16, 12, 4)) * 3).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as processor:
        first = processor.process_cuda(torch_cuda.from_numpy(tensor).cuda(), (40, 30))
        kept = first.to_host()
        for _ in range(5):
            processor.process_cuda(torch_cuda.from_numpy(-tensor).cuda(), (40, 30))
        again = first.to_host()
        np.testing.assert_array_equal(again.confidence_masks, kept.confidence_masks)
        objects, allocations = processor.live_gl_objects(), processor._cuda.pool.allocations
        for _ in range(20):
            processor.process_cuda(torch_cuda.from_numpy(tensor).cuda(), (40, 30))
        assert processor.live_gl_objects() == objects
        assert processor._cuda.pool.allocations == allocations  # blocks come back to the pool
        for size in [(40, 30), (24, 17)] * 2:
            processor.process_cuda(torch_cuda.from_numpy(tensor).cuda(), size)
        registered = len(processor._cuda._registrations)  # buffers or textures, once per generation
        for size in [(40, 30), (24, 17)] * 5:
            processor.process_cuda(torch_cuda.from_numpy(tensor).cuda(), size)
        assert len(processor._cuda._registrations) == registered
    np.testing.assert_array_equal(first.to_host().category_mask, kept.category_mask)  # after close


def test_cuda_frame_after_a_context_loss_is_recomputed(torch_cuda):
    tensor = (np.random.default_rng(5).standard_normal((16, 12, 6)) * 3).astype(np.float32)
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as processor:
        on_gpu = torch_cuda.from_numpy(tensor).cuda()
        processor.process_cuda(on_gpu, (40, 30))
        testing.lose_context(processor)
        masks = processor.process_cuda(on_gpu, (40, 30))
        assert masks.generation == 2 and processor.stats["context_losses"] == 1
        _assert_reference(masks.to_host(), tensor, "softmax", (40, 30))


def test_cuda_tensor_on_the_host_or_another_device(torch_cuda):
    tensor = torch_cuda.zeros((4, 3, 2))
    with gpu_seg.SegmentationPostprocessor("none", backend="gl") as processor:
        with pytest.raises(gpu_seg.InputError, match="host memory"):
            processor.process_cuda(tensor)  # a CPU torch tensor: DLPack says it is on the CPU
        with pytest.raises(gpu_seg.InputError, match="C-contiguous"):
            processor.process_cuda(tensor.cuda().permute(1, 0, 2))
        if torch_cuda.cuda.device_count() < 2:
            pytest.skip("one CUDA device: the wrong-device case needs two")
        with pytest.raises(gpu_seg.InputError, match="CUDA device"):
            processor.process_cuda(tensor.to("cuda:1"))
