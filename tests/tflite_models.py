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


class _Graph:
    """Tensors, buffers and operators of a one-subgraph model under construction."""

    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers: list = [tfl.BufferT()]  # buffer 0: the empty one TFLite reserves
        self.operators: list = []
        self.codes: list[int] = []

    def tensor(self, name: str, shape: Sequence[int], data: np.ndarray | None = None) -> int:
        raw = (
            None
            if data is None
            else np.frombuffer(np.ascontiguousarray(data, np.float32).tobytes(), np.uint8)
        )
        self.buffers.append(tfl.BufferT(data=raw))
        self.tensors.append(
            tfl.TensorT(
                shape=list(shape), type=tfl.TensorType.FLOAT32, buffer=len(self.buffers) - 1, name=name
            )
        )
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int, options) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.operators.append(
            tfl.OperatorT(
                opcodeIndex=self.codes.index(code),
                inputs=inputs,
                outputs=outputs,
                builtinOptionsType=options_type,
                builtinOptions=options,
            )
        )

    def pick(self, image: int, picks: Sequence[int], height: int, width: int, name: str) -> int:
        """A 1x1 convolution copying input channel ``picks[c]`` to output channel ``c``."""
        weights = np.zeros((len(picks), 1, 1, 3), np.float32)
        weights[np.arange(len(picks)), 0, 0, list(picks)] = 1.0
        w = self.tensor(f"{name}_weights", weights.shape, weights)
        b = self.tensor(f"{name}_bias", [len(picks)], np.zeros(len(picks), np.float32))
        out = self.tensor(name, [1, height, width, len(picks)])
        options = tfl.Conv2DOptionsT(padding=tfl.Padding.VALID, strideW=1, strideH=1)
        self.op(tfl.BuiltinOperator.CONV_2D, [image, w, b], [out], tfl.BuiltinOptions.Conv2DOptions, options)
        return out


def picker_model(
    size: tuple[int, int],
    picks: Sequence[int] = (0,),
    *,
    normalization: tuple[Sequence[float], Sequence[float]] | None = ((0.0,), (255.0,)),
    activation: str | None = "none",
    labels: Sequence[str] | None = None,
    metadata: bool = True,
    reshape_to: Sequence[int] | None = None,
    decoy_output: bool = False,
    no_operators: bool = False,
) -> bytes:
    """A model with input ``[1, h, w, 3]`` float32 and output ``[1, h, w, len(picks)]`` = chosen channels.

    ``size`` is ``(width, height)``. ``metadata=False`` leaves out the TFLITE_METADATA buffer.
    ``reshape_to`` reshapes the output (``RESHAPE``); ``decoy_output`` adds a 3-channel copy of the
    input as a *first* output, before the masks; ``no_operators`` leaves the operators out (nothing
    writes the output: LiteRT loads the model and fails when it runs).
    """
    width, height = size
    graph = _Graph()
    image = graph.tensor("image", [1, height, width, 3])
    masks = graph.pick(image, picks, height, width, "masks")
    if reshape_to is not None:
        reshaped = graph.tensor("reshaped", reshape_to)
        options = tfl.ReshapeOptionsT(newShape=list(reshape_to))
        graph.op(tfl.BuiltinOperator.RESHAPE, [masks], [reshaped], tfl.BuiltinOptions.ReshapeOptions, options)
        masks = reshaped
    outputs = [graph.pick(image, (0, 1, 2), height, width, "decoy"), masks] if decoy_output else [masks]
    entries = None
    if metadata:
        labels_file = "labels.txt" if labels is not None else None
        meta = _metadata(normalization, activation, labels_file, len(picks))
        graph.buffers.append(tfl.BufferT(data=np.frombuffer(meta, np.uint8)))
        entries = [tfl.MetadataT(name="TFLITE_METADATA", buffer=len(graph.buffers) - 1)]
    subgraph = tfl.SubGraphT(
        tensors=graph.tensors,
        inputs=[image],
        outputs=outputs,
        operators=[] if no_operators else graph.operators,
        name="main",
    )
    signature = tfl.SignatureDefT(
        inputs=[tfl.TensorMapT(name="image", tensorIndex=image)],
        outputs=[tfl.TensorMapT(name=f"out{i}", tensorIndex=t) for i, t in enumerate(outputs)],
        signatureKey="serving_default",
        subgraphIndex=0,
    )
    codes = [tfl.OperatorCodeT(deprecatedBuiltinCode=c, builtinCode=c, version=1) for c in graph.codes]
    model = tfl.ModelT(
        version=3,
        operatorCodes=codes,
        subgraphs=[subgraph],
        buffers=graph.buffers,
        metadata=entries,
        signatureDefs=[signature],
    )
    data = _serialise(model, b"TFL3")
    if labels is not None and metadata:
        data = append_files(data, {"labels.txt": "".join(f"{label}\n" for label in labels).encode()})
    return data


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """The model followed by a zip archive of ``files`` (how MediaPipe models carry associated files)."""
    stream = io.BytesIO(model)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return stream.getvalue()
