"""Run real MediaPipe's CPU segmentation post-processing on any tensor (a test oracle).

Also reachable as ``gpu_seg.oracle`` (``gpu_seg.oracle.mediapipe_postprocess(...)``, or
``from gpu_seg.oracle import mediapipe_postprocess``).

MediaPipe's ``ImageSegmenter`` post-processes whatever its model outputs. This module builds a
tiny TFLite model whose output is a fixed tensor ``T`` for every input image::

    input [1, H, W, 3] float32 -> CONV_2D (1x1 zero filter, C outputs, zero bias)
                               -> ADD (constant [1, H, W, C] float32 = T) -> output

with the metadata the task needs (an RGB image input normalised with mean 127.5 / std 127.5, and
``SEGMENTER_METADATA`` carrying the activation), then runs ``ImageSegmenter`` with the CPU
delegate on a blank image of the requested output size. The masks that come back are
MediaPipe's own post-processing of ``T``: the activation, the OpenCV resize of the confidence
masks and the align-corners category mask. ``0 * x + T`` is exactly ``T`` for every finite input,
and NaN/inf in ``T`` reach the post-processing unchanged; subnormal values of ``T`` do not (they
come out of the constant model as zeros, measured; XNNPACK flushes them, by all signs), so an
oracle result for subnormal logits is MediaPipe's post-processing of zeros there.

Conventions are those of :func:`gpu_seg.reference.reference_postprocess`: the tensor is
channel-interleaved ``(H, W, C)`` with row 0 at the top, the output size is ``(width, height)``,
confidence masks come back as float32 ``(C, height, width)`` and the category mask as uint8
``(height, width)``.

MediaPipe is optional (``pip install "gpu_seg[mediapipe]"``). It is imported lazily, so importing
this module never needs it; the functions that do raise :class:`OracleUnavailableError`.

Notes (measured with the PyPI ``mediapipe`` 1.2.3 wheel on x86-64 Linux):
    * One call costs a few milliseconds for small tensors (one ``ImageSegmenter`` session each);
      the first call of a process loads the library (~0.6 s).
    * The wheel's native library logs every task session to Google's usage telemetry
      (``play.googleapis.com``; google-ai-edge/mediapipe issue 6291 on GitHub) and offers no
      switch to turn it off.
      Offline, closing a session blocks for ~5 s about once every 27 sessions when they are
      opened back to back (more than ~25 per second); spaced sessions never block.
    * TFLite prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` to stderr once
      per process. The model carries one signature, which keeps MediaPipe's "feedback manager"
      warning quiet; nothing here touches Python's or MediaPipe's logging configuration.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import interrupts
from ..errors import GpuSegError, InputError
from ..inputs import as_hwc_float32, check_requested_outputs, parse_activation, parse_output_size
from ..types import Activation, Result
from .messages import INSTALL_MEDIAPIPE

__all__ = [
    "OracleUnavailableError",
    "blank_image",
    "build_constant_model",
    "mediapipe_available",
    "mediapipe_postprocess",
    "mediapipe_version",
    "open_segmenter",
]

#: ``ImageSegmenterOptions.activation`` codes of ``image_segmenter_metadata_schema.fbs``.
_ACTIVATION_CODES = {Activation.NONE: 0, Activation.SIGMOID: 1, Activation.SOFTMAX: 2}

#: Alignment of every constant buffer in the model (what the TFLite converter uses).
_BUFFER_ALIGNMENT = 16


class OracleUnavailableError(GpuSegError, ImportError):
    """MediaPipe (or a part of it that the oracle needs) cannot be imported."""

    def __init__(self, detail: str = "") -> None:
        message = f"the MediaPipe oracle needs the mediapipe package: {INSTALL_MEDIAPIPE}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


@functools.lru_cache(maxsize=1)
def _modules() -> SimpleNamespace:
    """Import the parts of MediaPipe the oracle uses, once."""
    try:
        return SimpleNamespace(
            flatbuffers=importlib.import_module("flatbuffers"),
            schema=importlib.import_module("mediapipe.tasks.metadata.schema_py_generated"),
            metadata=importlib.import_module("mediapipe.tasks.metadata.metadata_schema_py_generated"),
            segmenter_metadata=importlib.import_module(
                "mediapipe.tasks.metadata.image_segmenter_metadata_schema_py_generated"
            ),
            image=importlib.import_module("mediapipe.tasks.python.vision.core.image"),
            base_options=importlib.import_module("mediapipe.tasks.python.core.base_options"),
            running_mode=importlib.import_module(
                "mediapipe.tasks.python.vision.core.vision_task_running_mode"
            ),
            image_segmenter=importlib.import_module("mediapipe.tasks.python.vision.image_segmenter"),
        )
    except ImportError as exc:
        raise OracleUnavailableError(f"{type(exc).__name__}: {exc}") from exc


def mediapipe_available() -> bool:
    """Whether the oracle can run: MediaPipe and the modules it uses import."""
    try:
        _modules()
    except OracleUnavailableError:
        return False
    return True


def mediapipe_version() -> str | None:
    """The installed ``mediapipe`` distribution's version, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        return None


def _finish(table: Any, identifier: bytes) -> bytes:
    """Serialise a flatbuffer object-API table with a 4-byte file identifier."""
    builder = _modules().flatbuffers.Builder(1024)
    builder.Finish(table.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def _metadata_buffer(activation: Activation, channels: int) -> bytes:
    """The ``TFLITE_METADATA`` flatbuffer (file identifier ``M001``)."""
    md = _modules().metadata
    segmenter_options = _modules().segmenter_metadata.ImageSegmenterOptionsT(
        activation=_ACTIVATION_CODES[activation]
    )
    normalization = md.ProcessUnitT(
        optionsType=md.ProcessUnitOptions.NormalizationOptions,
        options=md.NormalizationOptionsT(mean=[127.5], std=[127.5]),
    )
    image_content = md.ContentT(
        contentPropertiesType=md.ContentProperties.ImageProperties,
        contentProperties=md.ImagePropertiesT(colorSpace=md.ColorSpaceType.RGB),
    )
    subgraph = md.SubGraphMetadataT(
        name="constant_segmenter",
        inputTensorMetadata=[
            md.TensorMetadataT(name="image", content=image_content, processUnits=[normalization])
        ],
        outputTensorMetadata=[
            md.TensorMetadataT(name="segmentation_masks", description=f"{channels} constant channels")
        ],
        customMetadata=[
            md.CustomMetadataT(
                name="SEGMENTER_METADATA",
                data=np.frombuffer(_finish(segmenter_options, b"V001"), np.uint8),
            )
        ],
    )
    model_metadata = md.ModelMetadataT(
        name="gpu_seg constant segmenter",
        description="Outputs a fixed tensor for any image (gpu_seg.oracle).",
        subgraphMetadata=[subgraph],
    )
    return _finish(model_metadata, b"M001")


class _AlignedBuffer:
    """A TFLite ``Buffer`` table whose data starts on a 16-byte boundary.

    The generated ``BufferT.Pack`` aligns ``[ubyte]`` data to 1 byte only; constant tensors read
    as float32 should be aligned, as the TFLite converter does.
    """

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the flatbuffers object-API protocol
        schema = _modules().schema
        offset = None
        if self.data:
            builder.StartVector(1, len(self.data), _BUFFER_ALIGNMENT)
            builder.head -= len(self.data)
            builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
            offset = builder.EndVector()
        schema.BufferStart(builder)
        if offset is not None:
            schema.BufferAddData(builder, offset)
        return schema.BufferEnd(builder)


def build_constant_model(tensor_hwc_float32: np.ndarray, activation: Activation | str) -> bytes:
    """Build a ``.tflite`` segmentation model whose output is ``tensor_hwc_float32`` for any image.

    Args:
        tensor_hwc_float32: the output tensor ``T``, float32 ``(H, W, C)`` (``(H, W)`` and
            ``(1, H, W, C)`` are accepted, float16/float64 converted), channel-interleaved, row 0 at
            the top.
        activation: the activation written into the ``SEGMENTER_METADATA``: ``"none"``,
            ``"sigmoid"``, ``"softmax"`` or an :class:`~gpu_seg.types.Activation`.

    Returns:
        The TFLite flatbuffer (file identifier ``TFL3``) with MediaPipe metadata: input
        ``[1, H, W, 3]`` float32 (RGB, mean 127.5, std 127.5), output ``[1, H, W, C]`` float32.

    Raises:
        InputError: bad tensor or activation.
        OracleUnavailableError: MediaPipe is not installed.
    """
    tensor = as_hwc_float32(tensor_hwc_float32)
    activation = parse_activation(activation)
    schema = _modules().schema
    height, width, channels = tensor.shape
    float32 = schema.TensorType.FLOAT32

    tensors = [
        schema.TensorT(shape=[1, height, width, 3], type=float32, buffer=1, name="image"),
        schema.TensorT(shape=[channels, 1, 1, 3], type=float32, buffer=2, name="zero_filter"),
        schema.TensorT(shape=[channels], type=float32, buffer=3, name="zero_bias"),
        schema.TensorT(shape=[1, height, width, channels], type=float32, buffer=4, name="zeros"),
        schema.TensorT(shape=[1, height, width, channels], type=float32, buffer=5, name="constant"),
        schema.TensorT(shape=[1, height, width, channels], type=float32, buffer=6, name="segmentation_masks"),
    ]
    conv = schema.OperatorT(
        opcodeIndex=0,
        inputs=[0, 1, 2],
        outputs=[3],
        builtinOptionsType=schema.BuiltinOptions.Conv2DOptions,
        builtinOptions=schema.Conv2DOptionsT(padding=schema.Padding.VALID, strideW=1, strideH=1),
    )
    add = schema.OperatorT(
        opcodeIndex=1,
        inputs=[3, 4],
        outputs=[5],
        builtinOptionsType=schema.BuiltinOptions.AddOptions,
        builtinOptions=schema.AddOptionsT(),
    )
    subgraph = schema.SubGraphT(tensors=tensors, inputs=[0], outputs=[5], operators=[conv, add], name="main")
    # One signature, so that MediaPipe's inference feedback manager stays quiet.
    signature = schema.SignatureDefT(
        inputs=[schema.TensorMapT(name="image", tensorIndex=0)],
        outputs=[schema.TensorMapT(name="segmentation_masks", tensorIndex=5)],
        signatureKey="serving_default",
        subgraphIndex=0,
    )
    buffers = [
        _AlignedBuffer(),  # 0: the empty buffer TFLite reserves
        _AlignedBuffer(),  # 1: image (runtime)
        _AlignedBuffer(bytes(4 * channels * 3)),  # 2: zero filter
        _AlignedBuffer(bytes(4 * channels)),  # 3: zero bias
        _AlignedBuffer(),  # 4: conv output (runtime)
        _AlignedBuffer(tensor.astype("<f4", copy=False).tobytes()),  # 5: the constant T
        _AlignedBuffer(),  # 6: model output (runtime)
        _AlignedBuffer(_metadata_buffer(activation, channels)),  # 7: TFLITE_METADATA
    ]
    op_codes = [
        schema.OperatorCodeT(
            deprecatedBuiltinCode=schema.BuiltinOperator.CONV_2D,
            builtinCode=schema.BuiltinOperator.CONV_2D,
            version=1,
        ),
        schema.OperatorCodeT(
            deprecatedBuiltinCode=schema.BuiltinOperator.ADD,
            builtinCode=schema.BuiltinOperator.ADD,
            version=1,
        ),
    ]
    model = schema.ModelT(
        version=3,
        operatorCodes=op_codes,
        subgraphs=[subgraph],
        description="gpu_seg constant segmenter",
        buffers=buffers,
        metadata=[schema.MetadataT(name="TFLITE_METADATA", buffer=7)],
        signatureDefs=[signature],
    )
    builder = _modules().flatbuffers.Builder(tensor.nbytes + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def open_segmenter(model: bytes, confidence: bool, category: bool) -> Any:
    """MediaPipe's ``ImageSegmenter`` on ``model``: CPU delegate, IMAGE mode; close it when done.

    Raises:
        OracleUnavailableError: MediaPipe is not installed.
        RuntimeError, ValueError: MediaPipe rejected the model or the options.
    """
    mods = _modules()
    base_options_cls = mods.base_options.BaseOptions
    options = mods.image_segmenter.ImageSegmenterOptions(
        base_options=base_options_cls(model_asset_buffer=model, delegate=base_options_cls.Delegate.CPU),
        running_mode=mods.running_mode.VisionTaskRunningMode.IMAGE,
        output_confidence_masks=confidence,
        output_category_mask=category,
    )
    return mods.image_segmenter.ImageSegmenter.create_from_options(options)


def blank_image(width: int, height: int) -> Any:
    """A black sRGB MediaPipe image of ``width x height``: the input a constant model ignores, and
    the size MediaPipe resizes the masks to."""
    mods = _modules()
    return mods.image.Image(mods.image.ImageFormat.SRGB, np.zeros((height, width, 3), np.uint8))


def _segment(model: bytes, width: int, height: int, confidence: bool, category: bool) -> Any:
    """Run MediaPipe's ImageSegmenter (CPU delegate, IMAGE mode) on a blank ``width x height`` image."""
    image = blank_image(width, height)
    try:  # not interrupted midway: MediaPipe freed its graph under the running call (a segfault)
        with interrupts.held(), open_segmenter(model, confidence, category) as segmenter:
            return segmenter.segment(image)
    except (RuntimeError, ValueError, OSError, IndexError) as exc:  # what MediaPipe's status mapping raises
        raise GpuSegError(f"MediaPipe's ImageSegmenter failed: {exc}") from exc


def _plane(mask: Any, width: int, height: int, dtype: type, what: str) -> np.ndarray:
    """A read-only ``(height, width)`` view of one MediaPipe mask image, checked.

    The view borrows ``mask``'s memory: copy it before ``mask`` is released.
    """
    view = np.asarray(mask.numpy_view())
    if view.ndim == 3 and view.shape[2] == 1:
        view = view[:, :, 0]
    if view.shape != (height, width) or view.dtype != dtype:
        raise GpuSegError(
            f"MediaPipe returned a {what} of {view.dtype} {view.shape}; "
            f"expected {np.dtype(dtype)} {(height, width)}"
        )
    return view


def mediapipe_postprocess(
    tensor: np.ndarray,
    activation: Activation | str = Activation.NONE,
    output_size: tuple[int, int] | None = None,
    output_confidence_masks: bool = True,
    output_category_mask: bool = True,
) -> Result:
    """MediaPipe's own CPU post-processing of ``tensor``, observed through ``ImageSegmenter``.

    Same arguments and conventions as :func:`gpu_seg.reference.reference_postprocess`.

    Args:
        tensor: model output, float32 ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``,
            channel-interleaved, row 0 at the top (float16/float64 are converted).
        activation: ``"none"``, ``"sigmoid"``, ``"softmax"`` or an
            :class:`~gpu_seg.types.Activation`; it goes into the model metadata.
        output_size: ``(width, height)`` of the masks; defaults to the tensor size. With
            ``output_category_mask`` both must be >= 2: MediaPipe's align-corners mapping divides
            by zero when an output dimension is 1 and then indexes out of bounds (a segfault or
            garbage), so the oracle refuses such sizes. Confidence masks alone accept any size.
        output_confidence_masks: return the float32 ``(C, height, width)`` masks.
        output_category_mask: return the uint8 ``(height, width)`` mask.

    Returns:
        A :class:`~gpu_seg.types.Result` with ``backend == "mediapipe"``; the arrays are fresh
        C-contiguous copies.

    Raises:
        InputError: bad tensor, activation or output size (including a width or height of 1
            with the category mask), or no output requested.
        OracleUnavailableError: MediaPipe is not installed.
        GpuSegError: MediaPipe failed or returned masks of an unexpected count or shape.
    """
    check_requested_outputs(output_confidence_masks, output_category_mask)
    tensor = as_hwc_float32(tensor)
    activation = parse_activation(activation)
    width, height = parse_output_size(output_size, tensor.shape[:2])
    if output_category_mask and 1 in (width, height):
        raise InputError(
            "output_size",
            f"({width}, {height}): MediaPipe's category mask divides by zero when the output width or "
            "height is 1 (undefined behaviour: it crashes the process or returns garbage); use "
            "dimensions >= 2 or output_category_mask=False",
        )
    channels = tensor.shape[2]
    model = build_constant_model(tensor, activation)
    result = _segment(model, width, height, bool(output_confidence_masks), bool(output_category_mask))

    confidence = None
    if output_confidence_masks:
        masks = result.confidence_masks or []
        if len(masks) != channels:
            raise GpuSegError(
                f"MediaPipe returned {len(masks)} confidence masks for a tensor with {channels} channels"
            )
        confidence = np.empty((channels, height, width), np.float32)
        for c, mask in enumerate(masks):
            confidence[c] = _plane(mask, width, height, np.float32, f"confidence mask {c}")
    category = None
    if output_category_mask:
        if result.category_mask is None:
            raise GpuSegError("MediaPipe returned no category mask")
        category = np.array(
            _plane(result.category_mask, width, height, np.uint8, "category mask"), order="C", copy=True
        )
    return Result(confidence_masks=confidence, category_mask=category, backend="mediapipe")
