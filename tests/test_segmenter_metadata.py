"""gpu_seg.segmenter.metadata: tensors and MediaPipe metadata read from .tflite bytes, no MediaPipe needed.

The expected values come from MediaPipe's own generated FlatBuffers modules (object API) reading
the same bytes, and from models built with them.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("mediapipe.tasks.metadata.schema_py_generated", reason="mediapipe is not installed")

from mediapipe.tasks.metadata import image_segmenter_metadata_schema_py_generated as seg_md
from mediapipe.tasks.metadata import metadata_schema_py_generated as md
from mediapipe.tasks.metadata import schema_py_generated as tfl

from gpu_seg import Activation, InputError
from gpu_seg.segmenter import read_model_info
from gpu_seg.segmenter.flatbuf import FlatBufferError, root_table

from .segmenter_support import selfie_model
from .tflite_models import append_files, picker_model


def _mediapipe_view(data: bytes) -> dict:
    """What MediaPipe's generated object API reads from ``data``."""
    model = tfl.ModelT.InitFromPackedBuf(data, 0)
    graph = model.subgraphs[0]
    tensor_in, tensor_out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[-1]]
    entry = next(m for m in model.metadata if m.name == b"TFLITE_METADATA")
    meta = md.ModelMetadataT.InitFromPackedBuf(bytes(model.buffers[entry.buffer].data), 0)
    sub = meta.subgraphMetadata[0]
    norm = sub.inputTensorMetadata[0].processUnits[0].options
    custom = next(c for c in sub.customMetadata if c.name == b"SEGMENTER_METADATA")
    options = seg_md.ImageSegmenterOptionsT.InitFromPackedBuf(bytes(custom.data), 0)
    files = sub.outputTensorMetadata[-1].associatedFiles
    return {
        "input_shape": tuple(int(d) for d in tensor_in.shape),
        "output_shape": tuple(int(d) for d in tensor_out.shape),
        "output_name": tensor_out.name.decode(),
        "mean": tuple(float(v) for v in norm.mean),
        "std": tuple(float(v) for v in norm.std),
        "activation": int(options.activation),
        "labels_file": files[0].name.decode() if files else None,
        "name": meta.name.decode(),
    }


@pytest.mark.parametrize("landscape", [False, True])
def test_selfie_models_read_like_mediapipe_reads_them(landscape):
    data = selfie_model(landscape).read_bytes()
    info = read_model_info(data)
    expected = _mediapipe_view(data)
    model_shape = (1, 144, 256, 3) if landscape else (1, 256, 256, 3)
    assert info.input.shape == expected["input_shape"] == model_shape
    assert info.output.shape == expected["output_shape"]
    assert info.output.name == expected["output_name"]
    assert info.input.dtype == info.output.dtype == "float32"
    assert info.normalization.mean == expected["mean"] == (0.0,)
    assert info.normalization.std == expected["std"] == (255.0,)
    assert expected["activation"] == 0 and info.activation is Activation.NONE
    assert expected["labels_file"] is not None
    assert info.labels == ("selfie",)
    assert info.name == expected["name"] == "ImageSegmenter"
    assert info.has_metadata and info.output_index == 0


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_activation_labels_and_normalization_of_a_built_model(activation):
    normalization = ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    data = picker_model((7, 5), (2, 0, 1), normalization=normalization, activation=activation, labels="abc")
    info = read_model_info(data)
    assert info.activation is Activation(activation)
    assert info.labels == ("a", "b", "c")
    assert info.normalization.mean == (1.0, 1.0, 1.0) and info.normalization.std == (2.0, 2.0, 2.0)
    assert info.input.shape == (1, 5, 7, 3) and info.output.shape == (1, 5, 7, 3)


def test_labels_lines_like_mediapipe():
    # One label per line; a final empty line is dropped, CR of CRLF files too.
    base = picker_model((4, 4), (0, 1), labels=None)
    info = read_model_info(base)
    assert info.labels == ()
    model = picker_model((4, 4), (0, 1), labels=["x", "y"])
    assert read_model_info(model).labels == ("x", "y")
    crlf = model[: model.index(b"PK\x03\x04")]
    crlf = append_files(crlf, {"labels.txt": b"back\r\nfront\r\n"})
    assert read_model_info(crlf).labels == ("back", "front")


def test_model_without_metadata():
    info = read_model_info(picker_model((6, 4), (0,), metadata=False))
    assert not info.has_metadata
    assert info.normalization is None and info.activation is None and info.labels == ()
    assert info.output.shape == (1, 4, 6, 1)


def test_metadata_without_activation_or_normalization():
    info = read_model_info(picker_model((6, 4), (0,), normalization=None, activation=None))
    assert info.has_metadata and info.activation is None and info.normalization is None


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x00" * 64, b"not a model at all, just text"])
def test_not_a_model(data):
    with pytest.raises(InputError) as info:
        read_model_info(data)
    assert info.value.argument == "model"


def test_truncated_and_corrupted_models_raise_input_error_only():
    data = selfie_model().read_bytes()
    model_end = data.index(b"PK\x03\x04")  # the flatbuffer part; the zip of labels follows
    rng = random.Random(7)
    cuts = [8, 12, 16, 64, 1000, model_end // 2, model_end - 3000]  # (the last bytes hold weights)
    flips = [rng.randrange(0, 2048) for _ in range(60)]
    cases = [data[:cut] for cut in cuts]
    for position in flips:
        broken = bytearray(data)
        broken[position] ^= 0xFF
        cases.append(bytes(broken))
    refused = []
    for case in cases:
        try:
            read_model_info(case)  # a flip may land in a harmless byte: then it parses
        except InputError as exc:
            assert exc.argument == "model"
            refused.append(case)
    assert all(case in refused for case in cases[: len(cuts)])  # every truncation is refused


def test_flatbuffer_reads_are_bounds_checked():
    with pytest.raises(FlatBufferError):
        root_table(b"\xff\xff\x00\x00TFL3")
    table = root_table(picker_model((2, 2)))
    assert table.scalar(99, "<i", 5) == 5  # a field past the vtable is absent
    assert len(table.tables(2)) == 1  # the one subgraph
