"""What a segmentation ``.tflite`` says about itself: tensors and MediaPipe metadata.

A ``.tflite`` file is a FlatBuffer (TFLite schema, file identifier ``TFL3``). MediaPipe's metadata
is a second FlatBuffer (metadata schema, identifier ``M001``) stored in the model buffer that the
model's ``metadata`` entry named ``TFLITE_METADATA`` points to; associated files (``labels.txt``)
live in a zip archive appended to the model. This module reads, like MediaPipe's
``ImageSegmenterGraph``:

* the input tensor (``[1, H, W, 3]``) and its ``NormalizationOptions`` (mean, std);
* the activation from the subgraph's custom metadata ``SEGMENTER_METADATA``
  (``ImageSegmenterOptions``, identifier ``V001``);
* the labels: the first ``TENSOR_AXIS_LABELS`` file of the *last* output tensor's metadata;
* the output tensor: the only one, or the second when there are two (MediaPipe 0.10.25+).

No MediaPipe or TFLite package is needed; see :mod:`gpu_seg.segmenter.flatbuf`.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

from ..errors import InputError
from ..types import Activation
from .flatbuf import FlatBufferError, Table, file_identifier, root_table

__all__ = ["ModelInfo", "Normalization", "TensorInfo", "read_model_info"]

#: TFLite ``TensorType`` codes -> numpy dtype names (the ones a segmenter can meet).
_TENSOR_TYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
}
#: ``ImageSegmenterOptions.activation`` codes.
_ACTIVATIONS = {0: Activation.NONE, 1: Activation.SIGMOID, 2: Activation.SOFTMAX}
#: ``ProcessUnitOptions`` union code of ``NormalizationOptions``.
_NORMALIZATION_OPTIONS = 1
#: ``AssociatedFileType.TENSOR_AXIS_LABELS``.
_TENSOR_AXIS_LABELS = 2
_METADATA_NAME = "TFLITE_METADATA"
_SEGMENTER_METADATA = "SEGMENTER_METADATA"

# Field indices of the schemas (TFLite schema.fbs and metadata_schema.fbs).
_MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_METADATA = 2, 4, 6
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 0, 1, 2
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME = 0, 1, 3
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_METADATA_ENTRY_NAME, _METADATA_ENTRY_BUFFER = 0, 1
_MODEL_META_NAME, _MODEL_META_SUBGRAPHS = 0, 3
_SUBGRAPH_META_INPUTS, _SUBGRAPH_META_OUTPUTS, _SUBGRAPH_META_CUSTOM = 2, 3, 9
_TENSOR_META_PROCESS_UNITS, _TENSOR_META_FILES = 4, 6
_UNIT_TYPE, _UNIT_OPTIONS = 0, 1
_NORM_MEAN, _NORM_STD = 0, 1
_FILE_NAME, _FILE_TYPE, _FILE_LOCALE = 0, 2, 3
_CUSTOM_NAME, _CUSTOM_DATA = 0, 1
_SEGMENTER_ACTIVATION = 0


@dataclass(frozen=True)
class TensorInfo:
    """One model tensor: ``name``, ``shape`` (as stored, e.g. ``(1, 256, 256, 3)``), numpy ``dtype`` name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Normalization:
    """Input normalisation ``(pixel - mean) / std``; one value for all channels or one per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`read_model_info` found.

    Attributes:
        input, output: the image input tensor and the mask output tensor (see the module docstring).
        normalization: from the input tensor's metadata; ``None`` when absent.
        activation: from ``SEGMENTER_METADATA``; ``None`` when absent.
        labels: one per output channel when the model ships a labels file; else empty.
        name: the metadata's model name, if any.
        has_metadata: whether a ``TFLITE_METADATA`` buffer was found.
        output_index: position of ``output`` among the model's outputs (0 or 1).
    """

    input: TensorInfo
    output: TensorInfo
    normalization: Normalization | None
    activation: Activation | None
    labels: tuple[str, ...]
    name: str | None
    has_metadata: bool
    output_index: int = 0


def read_model_info(data: bytes, argument: str = "model") -> ModelInfo:
    """Parse a segmentation ``.tflite`` (bytes, or any bytes-like object) without running it.

    Raises:
        InputError(argument): not bytes-like, not a TFLite model, corrupt, several subgraphs, no
            input or output, or a malformed metadata buffer.
    """
    if not isinstance(data, (bytes, bytearray)):
        try:
            data = memoryview(data).tobytes()  # type: ignore[arg-type]
        except TypeError:
            raise InputError(argument, f"expected the model's bytes, got {type(data).__name__}") from None
    if len(data) < 8 or file_identifier(data) != b"TFL3":
        raise InputError(argument, "not a TFLite model (no 'TFL3' file identifier)")
    try:
        return _read(memoryview(data), argument)
    except (FlatBufferError, UnicodeDecodeError) as exc:
        raise InputError(argument, f"corrupt TFLite model: {exc}") from None


def _read(data: memoryview, argument: str) -> ModelInfo:
    model = root_table(data)
    subgraphs = model.tables(_MODEL_SUBGRAPHS)
    if len(subgraphs) != 1:
        raise InputError(argument, f"a segmentation model has one subgraph; this one has {len(subgraphs)}")
    subgraph = subgraphs[0]
    tensors = subgraph.tables(_SUBGRAPH_TENSORS)
    inputs = subgraph.scalars(_SUBGRAPH_INPUTS, "<i")
    outputs = subgraph.scalars(_SUBGRAPH_OUTPUTS, "<i")
    if len(inputs) != 1:
        raise InputError(argument, f"expected one input tensor (the image), found {len(inputs)}")
    if len(outputs) not in (1, 2):
        raise InputError(argument, f"expected one or two output tensors, found {len(outputs)}")
    input_tensor = _tensor_info(tensors, int(inputs[0]), argument)
    output_tensor = _tensor_info(tensors, int(outputs[-1]), argument)

    output_index = len(outputs) - 1
    metadata = _metadata_buffer(data, model)
    if metadata is None:
        return ModelInfo(input_tensor, output_tensor, None, None, (), None, False, output_index)
    if file_identifier(metadata) != b"M001":
        raise InputError(argument, "the TFLITE_METADATA buffer is not MediaPipe metadata (identifier M001)")
    meta = root_table(metadata)
    name = meta.string(_MODEL_META_NAME)
    subgraph_meta = meta.tables(_MODEL_META_SUBGRAPHS)
    if not subgraph_meta:
        return ModelInfo(input_tensor, output_tensor, None, None, (), name, True, output_index)
    first = subgraph_meta[0]
    input_meta = first.tables(_SUBGRAPH_META_INPUTS)
    output_meta = first.tables(_SUBGRAPH_META_OUTPUTS)
    normalization = _normalization(input_meta[0], argument) if input_meta else None
    activation = _activation(first, argument)
    labels = _labels(data, output_meta[-1], argument) if output_meta else ()
    return ModelInfo(input_tensor, output_tensor, normalization, activation, labels, name, True, output_index)


def _tensor_info(tensors: list[Table], index: int, argument: str) -> TensorInfo:
    if not 0 <= index < len(tensors):
        raise InputError(argument, f"tensor index {index} out of range ({len(tensors)} tensors)")
    tensor = tensors[index]
    code = int(tensor.scalar(_TENSOR_TYPE, "<b", 0))
    return TensorInfo(
        name=tensor.string(_TENSOR_NAME) or "",
        shape=tuple(int(d) for d in tensor.scalars(_TENSOR_SHAPE, "<i")),
        dtype=_TENSOR_TYPES.get(code, f"tflite type {code}"),
    )


def _metadata_buffer(data: memoryview, model: Table) -> memoryview | None:
    """The bytes of the buffer that the ``TFLITE_METADATA`` entry names, or None."""
    for entry in model.tables(_MODEL_METADATA):
        if entry.string(_METADATA_ENTRY_NAME) != _METADATA_NAME:
            continue
        buffers = model.tables(_MODEL_BUFFERS)
        index = int(entry.scalar(_METADATA_ENTRY_BUFFER, "<I", 0))
        if not 0 <= index < len(buffers):
            raise FlatBufferError(f"metadata buffer index {index} out of range")
        buffer = buffers[index]
        offset = int(buffer.scalar(_BUFFER_OFFSET, "<Q", 0))
        if offset > 1:  # large models keep buffers after the flatbuffer: (offset, size) into the file
            size = int(buffer.scalar(_BUFFER_SIZE, "<Q", 0))
            if offset + size > len(data):
                raise FlatBufferError("metadata buffer runs past the end of the file")
            return data[offset : offset + size]
        content = buffer.bytes(_BUFFER_DATA)
        return content if content is not None and len(content) >= 8 else None
    return None


def _normalization(tensor_meta: Table, argument: str) -> Normalization | None:
    for unit in tensor_meta.tables(_TENSOR_META_PROCESS_UNITS):
        if int(unit.scalar(_UNIT_TYPE, "<B", 0)) != _NORMALIZATION_OPTIONS:
            continue
        options = unit.table(_UNIT_OPTIONS)
        if options is None:
            continue
        mean = tuple(float(v) for v in options.scalars(_NORM_MEAN, "<f"))
        std = tuple(float(v) for v in options.scalars(_NORM_STD, "<f"))
        return check_normalization(mean, std, argument)
    return None


def check_normalization(mean: tuple[float, ...], std: tuple[float, ...], argument: str) -> Normalization:
    """MediaPipe's rules: as many means as stds, 1 or 3 of each, no zero std."""
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise InputError(argument, f"normalization needs 1 or 3 means and as many stds, got {mean} and {std}")
    if any(abs(s) < 1.1920929e-07 for s in std):
        raise InputError(argument, f"normalization std {std} contains 0")
    return Normalization(mean, std)


def _activation(subgraph_meta: Table, argument: str) -> Activation | None:
    activation = None
    for custom in subgraph_meta.tables(_SUBGRAPH_META_CUSTOM):
        if custom.string(_CUSTOM_NAME) != _SEGMENTER_METADATA:
            continue
        payload = custom.bytes(_CUSTOM_DATA)
        if payload is None or len(payload) < 8:
            raise InputError(argument, "SEGMENTER_METADATA is empty")
        code = int(root_table(payload).scalar(_SEGMENTER_ACTIVATION, "<b", 0))
        if code not in _ACTIVATIONS:
            raise InputError(argument, f"SEGMENTER_METADATA has an unknown activation code {code}")
        activation = _ACTIVATIONS[code]  # like MediaPipe, the last entry wins
    return activation


def _labels(data: memoryview, tensor_meta: Table, argument: str) -> tuple[str, ...]:
    """Labels from the first ``TENSOR_AXIS_LABELS`` file, read from the zip appended to the model."""
    filename = None
    for associated in tensor_meta.tables(_TENSOR_META_FILES):
        if int(associated.scalar(_FILE_TYPE, "<b", 0)) == _TENSOR_AXIS_LABELS and associated.has(_FILE_NAME):
            filename = associated.string(_FILE_NAME)
            break
    if not filename:
        return ()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            text = archive.read(filename)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        KeyError,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ):
        # a bad checksum or stream, an unknown compression method, an encrypted file: MediaPipe
        # too goes on without labels when the file cannot be read
        return ()
    lines = text.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(line.removesuffix("\r") for line in lines)
