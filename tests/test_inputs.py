"""Bad input: a clear gpu_seg error that names the argument, never a crash, hang or garbage."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_seg
from gpu_seg import InputError, reference_postprocess


def _tensor(shape=(4, 5, 3), dtype=np.float32):
    return np.zeros(shape, dtype)


BAD_TENSORS = {
    "rank 1": (np.zeros(5, np.float32), "rank"),
    "rank 5": (np.zeros((1, 1, 2, 2, 2), np.float32), "rank"),
    "batch 2": (np.zeros((2, 4, 4, 3), np.float32), "batch"),
    "no channels": (np.zeros((4, 4, 0), np.float32), "no channels"),
    "empty height": (np.zeros((0, 4, 3), np.float32), "empty"),
    "empty width": (np.zeros((4, 0), np.float32), "empty"),
    "complex": (np.zeros((4, 4, 2), np.complex64), "complex64"),
    "int": (np.zeros((4, 4, 2), np.int32), "int32"),
    "uint8": (np.zeros((4, 4, 2), np.uint8), "uint8"),
    "bool": (np.zeros((4, 4, 2), bool), "bool"),
    "object": (np.array([["a", "b"]], dtype=object), "object"),
    "strings": (np.array([["a", "b"]]), "<U1"),
    "not an array": ("tensor", "str"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
@pytest.mark.parametrize("backend", ["gl", "cpu"])
def test_bad_tensors(processors, backend, case):
    tensor, words = BAD_TENSORS[case]
    with pytest.raises(InputError, match=words) as info:
        processors("softmax", backend).process(tensor, (8, 8))
    assert info.value.argument == "tensor"
    assert isinstance(info.value, ValueError)
    with pytest.raises(InputError, match=words):
        reference_postprocess(tensor, "softmax", (8, 8))


BAD_SIZES = {
    "zero width": ((0, 5), "not positive"),
    "negative": ((5, -1), "not positive"),
    "float": ((5.0, 4), "float"),
    "string": (("5", 4), "not an integer"),
    "triple": ((1, 2, 3), "pair"),
    "scalar": (7, "pair"),
    "bool": ((True, 4), "not an integer"),
}


@pytest.mark.parametrize("case", list(BAD_SIZES))
def test_bad_output_sizes(processors, case):
    size, words = BAD_SIZES[case]
    with pytest.raises(InputError, match=words) as info:
        processors("none").process(_tensor(), size)
    assert info.value.argument == "output_size"


def test_numpy_integers_are_fine_as_sizes(processors):
    result = processors("none").process(_tensor(), (np.int64(6), np.int32(3)))
    assert result.category_mask.shape == (3, 6)


def test_output_size_above_the_gl_limit(processors):
    pp = processors("none")
    limit = pp.context_info.max_texture_size
    with pytest.raises(InputError, match="exceeds the limit") as info:
        pp.process(_tensor(), (limit + 1, 4))
    assert info.value.argument == "output_size"
    with pytest.raises(InputError, match="exceeds the limit"):
        pp.process(_tensor(), (4, limit + 1))


def test_unknown_activation():
    with pytest.raises(InputError, match="unknown activation") as info:
        gpu_seg.SegmentationPostprocessor("relu")
    assert info.value.argument == "activation"
    with pytest.raises(InputError, match="activation"):
        reference_postprocess(_tensor(), "tanh")


def test_activation_accepts_enum_and_any_case():
    with gpu_seg.SegmentationPostprocessor(gpu_seg.Activation.SIGMOID, backend="cpu") as pp:
        assert pp.activation is gpu_seg.Activation.SIGMOID
    with gpu_seg.SegmentationPostprocessor("SoftMax", backend="cpu") as pp:
        assert pp.activation is gpu_seg.Activation.SOFTMAX


def test_neither_output_requested():
    with pytest.raises(InputError, match="at least one"):
        gpu_seg.SegmentationPostprocessor(output_confidence_masks=False, output_category_mask=False)
    with pytest.raises(InputError, match="at least one"):
        reference_postprocess(_tensor(), output_confidence_masks=False, output_category_mask=False)


def test_unknown_backend_and_context():
    with pytest.raises(InputError, match="backend"):
        gpu_seg.SegmentationPostprocessor(backend="vulkan")
    with pytest.raises(InputError, match="context"):
        gpu_seg.SegmentationPostprocessor(context="mine")


@pytest.mark.parametrize("backend", ["gl", "cpu"])
def test_calls_after_close_raise(backend):
    pp = gpu_seg.SegmentationPostprocessor(backend=backend)
    pp.process(_tensor())
    pp.close()
    pp.close()  # idempotent
    with pytest.raises(gpu_seg.ClosedError):
        pp.process(_tensor())
    with pytest.raises(gpu_seg.ClosedError):
        pp.attach()


def test_context_manager_closes():
    with gpu_seg.SegmentationPostprocessor(backend="gl") as pp:
        pp.process(_tensor())
        assert pp.live_gl_objects() > 0
    assert pp.live_gl_objects() == 0
    with pytest.raises(gpu_seg.ClosedError):
        pp.process(_tensor())


BAD_OUTPUTS = {
    "wrong shape": (np.empty((3, 4, 4), np.float32), None),
    "wrong dtype": (np.empty((3, 4, 5), np.float64), None),
    "not contiguous": (np.empty((3, 4, 10), np.float32)[:, :, ::2], None),
    "read-only": (np.empty((3, 4, 5), np.float32), "readonly"),
    "category dtype": (None, np.empty((4, 5), np.int32)),
}


@pytest.mark.parametrize("case", list(BAD_OUTPUTS))
def test_bad_preallocated_outputs(processors, case):
    conf, cat = BAD_OUTPUTS[case]
    if isinstance(cat, str):
        conf.flags.writeable = False
        cat = None
    with pytest.raises(InputError) as info:
        processors("none").process(_tensor(), (5, 4), confidence_out=conf, category_out=cat)
    assert info.value.argument in ("confidence_out", "category_out")


@pytest.mark.parametrize("dtype", ["float64", "int8", "half-float", None, 3])
def test_bad_confidence_dtype(dtype):
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(confidence_dtype=dtype, backend="cpu")
    assert info.value.argument == "confidence_dtype"


@pytest.mark.parametrize("channels", [[], [1.5], ["a"], 3, [True]])
def test_bad_confidence_channels(channels):
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(confidence_channels=channels, backend="cpu")
    assert info.value.argument == "confidence_channels"


def test_confidence_channel_out_of_range_for_the_tensor(processors):
    with gpu_seg.SegmentationPostprocessor(confidence_channels=[0, 3], backend="gl") as pp:
        with pytest.raises(InputError, match="out of range") as info:
            pp.process(_tensor((4, 4, 3)))
        assert info.value.argument == "confidence_channels"
        assert pp.process(_tensor((4, 4, 4))).confidence_masks.shape == (2, 4, 4)
