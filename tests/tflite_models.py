"""Small segmentation ``.tflite`` models for tests, built with the FlatBuffers modules that mediapipe ships.

``picker_model`` outputs chosen input channels: a 1x1 ``CONV_2D`` whose one-hot weights copy input
channel ``picks[c]`` to output channel ``c`` (``1 * x + 0 * y + 0 * z`` is exactly ``x``). Its
metadata is configurable: normalisation, activation, labels (a zip appended to the model, as
MediaPipe's metadata writer does), or no metadata at all.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import flatbuffers
import numpy as np
from mediapipe.tasks.metadata import image_segmenter_metadata_schema_py_generated as seg_md
from mediapipe.tasks.metadata import metadata_schema_py_generated as md
from mediapipe.tasks.metadata import schema_py_generated as tfl

ACTIVATION_CODES = {"none": 0, "sigmoid": 1, "softmax": 2}


def _serialise(obj, identifier: bytes) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def _metadata(normalization, activation, labels_file, channels) -> bytes:
    units = []
    if normalization is not None:
        mean, std = normalization
        units.append(
            md.ProcessUnitT(
                optionsType=md.ProcessUnitOptions.NormalizationOptions,
                options=md.NormalizationOptionsT(mean=list(mean), std=list(std)),
            )
        )
    image = md.TensorMetadataT(name="image", processUnits=units or None)
    files = None
    if labels_file is not None:
        files = [md.AssociatedFileT(name=labels_file, type=md.AssociatedFileType.TENSOR_AXIS_LABELS)]
    masks = md.TensorMetadataT(name="masks", description=f"{channels} channels", associatedFiles=files)
    custom = None
    if activation is not None:
        options = seg_md.ImageSegmenterOptionsT(activation=ACTIVATION_CODES[activation])
        payload = np.frombuffer(_serialise(options, b"V001"), np.uint8)
        custom = [md.CustomMetadataT(name="SEGMENTER_METADATA", data=payload)]
    subgraph = md.SubGraphMetadataT(
        inputTensorMetadata=[image], outputTensorMetadata=[masks], customMetadata=custom
    )
    return _serialise(md.ModelMetadataT(name="picker", subgraphMetadata=[subgraph]), b"M001")


def picker_model(
    size: tuple[int, int],
    picks: Sequence[int] = (0,),
    *,
    normalization: tuple[Sequence[float], Sequence[float]] | None = ((0.0,), (255.0,)),
    activation: str | None = "none",
    labels: Sequence[str] | None = None,
    metadata: bool = True,
) -> bytes:
    """A model with input ``[1, h, w, 3]`` float32 and output ``[1, h, w, len(picks)]`` = chosen channels.

    ``size`` is ``(width, height)``. ``metadata=False`` leaves out the TFLITE_METADATA buffer.
    """
    width, height = size
    channels = len(picks)
    weights = np.zeros((channels, 1, 1, 3), np.float32)
    weights[np.arange(channels), 0, 0, list(picks)] = 1.0
    f32 = tfl.TensorType.FLOAT32
    tensors = [
        tfl.TensorT(shape=[1, height, width, 3], type=f32, buffer=1, name="image"),
        tfl.TensorT(shape=[channels, 1, 1, 3], type=f32, buffer=2, name="weights"),
        tfl.TensorT(shape=[channels], type=f32, buffer=3, name="bias"),
        tfl.TensorT(shape=[1, height, width, channels], type=f32, buffer=4, name="masks"),
    ]
    conv = tfl.OperatorT(
        opcodeIndex=0,
        inputs=[0, 1, 2],
        outputs=[3],
        builtinOptionsType=tfl.BuiltinOptions.Conv2DOptions,
        builtinOptions=tfl.Conv2DOptionsT(padding=tfl.Padding.VALID, strideW=1, strideH=1),
    )
    graph = tfl.SubGraphT(tensors=tensors, inputs=[0], outputs=[3], operators=[conv], name="main")
    signature = tfl.SignatureDefT(
        inputs=[tfl.TensorMapT(name="image", tensorIndex=0)],
        outputs=[tfl.TensorMapT(name="masks", tensorIndex=3)],
        signatureKey="serving_default",
        subgraphIndex=0,
    )
    buffers = [
        tfl.BufferT(),
        tfl.BufferT(),
        tfl.BufferT(data=np.frombuffer(weights.tobytes(), np.uint8)),
        tfl.BufferT(data=np.zeros(4 * channels, np.uint8)),
        tfl.BufferT(),
    ]
    entries = None
    labels_file = "labels.txt" if labels is not None else None
    if metadata:
        buffers.append(
            tfl.BufferT(
                data=np.frombuffer(_metadata(normalization, activation, labels_file, channels), np.uint8)
            )
        )
        entries = [tfl.MetadataT(name="TFLITE_METADATA", buffer=len(buffers) - 1)]
    code = tfl.OperatorCodeT(
        deprecatedBuiltinCode=tfl.BuiltinOperator.CONV_2D, builtinCode=tfl.BuiltinOperator.CONV_2D, version=1
    )
    model = tfl.ModelT(
        version=3,
        operatorCodes=[code],
        subgraphs=[graph],
        buffers=buffers,
        metadata=entries,
        signatureDefs=[signature],
    )
    data = _serialise(model, b"TFL3")
    if labels is not None and metadata:
        data = append_files(data, {labels_file: "".join(f"{label}\n" for label in labels).encode()})
    return data


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """The model followed by a zip archive of ``files`` (how MediaPipe models carry associated files)."""
    stream = io.BytesIO(model)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return stream.getvalue()
