"""gpu_seg.segmenter: bad arguments get an InputError naming them, never a third-party exception nor a
side effect on the caller's objects (image size limits, model paths, model bytes, options, the
preprocessing's arguments).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
pytest.importorskip("mediapipe.tasks", reason="mediapipe is not installed")

from gpu_seg import InputError
from gpu_seg.segmenter import ImageSegmenter, ImageToTensor, Normalization, preprocess, read_model_info

from .segmenter_support import selfie_model
from .tflite_models import picker_model

SIZE = (24, 16)  # model input (width, height)
#: The largest image side: cv2.remap (MediaPipe's warpPerspective too) needs sides below SHRT_MAX.
LARGEST = 32766


@pytest.fixture(scope="module")
def segmenter():
    with ImageSegmenter(picker_model(SIZE, (0, 1, 2)), backend="cpu") as seg:
        yield seg


# ----------------------------------------------------------------------------- image size limit
@pytest.mark.parametrize("opencv", [True, False], ids=["cv2.remap", "numpy"])
@pytest.mark.parametrize("shape", [(1, LARGEST, 3), (LARGEST, 1, 3), (1, LARGEST, 4)])
def test_the_largest_image_side_works(segmenter, monkeypatch, opencv, shape):
    if not opencv:
        monkeypatch.setattr(preprocess, "_opencv_remap", lambda: None)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    result = segmenter.segment(image)
    assert result.confidence_masks.shape == (3, *shape[:2])
    assert preprocess.MAX_IMAGE_DIM == LARGEST


@pytest.mark.parametrize("shape", [(1, LARGEST + 1, 3), (LARGEST + 1, 1, 3), (1, LARGEST + 2, 3)])
def test_one_pixel_past_the_largest_side_is_an_input_error(segmenter, shape):
    with pytest.raises(InputError, match=f"1..{LARGEST} pixels per side") as info:
        segmenter.segment(np.zeros(shape, np.uint8))
    assert info.value.argument == "image"


def test_video_frames_have_the_same_limit():
    with ImageSegmenter(picker_model(SIZE), running_mode="video", backend="cpu") as seg:
        assert seg.segment_for_video(np.zeros((LARGEST, 1, 3), np.uint8), 0).confidence_masks.shape == (
            1,
            LARGEST,
            1,
        )
        with pytest.raises(InputError) as info:
            seg.segment_for_video(np.zeros((LARGEST + 1, 1, 3), np.uint8), 1)
        assert info.value.argument == "frame"
        seg.segment_for_video(np.zeros((2, 2, 3), np.uint8), 1)  # the refused frame used no timestamp


def test_a_model_input_past_the_largest_side_is_refused_when_loaded():
    with ImageSegmenter(picker_model((LARGEST, 1)), backend="cpu") as seg:
        assert seg.segment(np.zeros((3, 3, 3), np.uint8)).confidence_masks.shape == (1, 3, 3)
    for size in ((LARGEST + 1, 1), (1, LARGEST + 1)):
        with pytest.raises(InputError, match="input tensor") as info:
            ImageSegmenter(picker_model(size), backend="cpu")
        assert info.value.argument == "model"


def _gl_texture_limit_or_skip(seg: ImageSegmenter) -> int:
    limit = seg.postprocessor.run_gl(lambda ctx: ctx.info["GL_MAX_TEXTURE_SIZE"])
    if limit >= LARGEST:
        pytest.skip(f"the GL texture limit {limit} is above the largest image side")
    return limit


def test_an_image_beyond_the_gl_texture_limit_names_the_image():
    with ImageSegmenter(picker_model(SIZE), backend="gl") as seg:
        limit = _gl_texture_limit_or_skip(seg)
        with pytest.raises(InputError, match=f"{limit}") as info:
            seg.segment(np.zeros((1, limit + 1, 3), np.uint8))
        assert info.value.argument == "image" and "backend='auto' or 'cpu'" in str(info.value)
    with ImageSegmenter(picker_model(SIZE), backend="gl", running_mode="video") as seg:
        with pytest.raises(InputError) as info:
            seg.segment_for_video(np.zeros((limit + 1, 1, 3), np.uint8), 0)
        assert info.value.argument == "frame"
        # refused after the model ran, it used no timestamp, as a frame refused before does not
        assert seg.segment_for_video(np.zeros((2, 2, 3), np.uint8), 0).timestamp_ms == 0


def test_an_image_beyond_the_gl_texture_limit_is_segmented_on_the_cpu_with_auto():
    with ImageSegmenter(picker_model(SIZE), backend="auto") as seg:
        limit = _gl_texture_limit_or_skip(seg)
        result = seg.segment(np.zeros((1, limit + 1, 3), np.uint8))
        masks = result.confidence_masks if result.category_mask is None else result.category_mask
        assert result.backend == "cpu" and masks.shape[-2:] == (1, limit + 1)


# ----------------------------------------------------------------------------- model paths
def test_a_file_descriptor_is_refused_and_left_open():
    path = selfie_model()
    with open(path, "rb") as stream:
        with pytest.raises(InputError) as info:
            ImageSegmenter.create_from_model_path(stream.fileno())
        assert info.value.argument == "model_path"
        assert stream.read(8)[4:] == b"TFL3"  # the caller's file is still open and unread


@pytest.mark.parametrize(
    "path",
    [
        b"/nonexistent/model.tflite",  # a bytes path, but no such file
        "model\x00.tflite",
        "\ud800.tflite",  # a lone surrogate: not encodable as a file name
        3.5,
        None,
        True,
    ],
    ids=["bytes-missing", "nul", "surrogate", "float", "none", "bool"],
)
def test_model_paths_that_are_not_paths(path):
    with pytest.raises(InputError) as info:
        ImageSegmenter.create_from_model_path(path)
    assert info.value.argument == "model_path"


def test_model_bytes_passed_as_a_path_point_to_create_from_buffer():
    with pytest.raises(InputError, match="create_from_buffer") as info:
        ImageSegmenter.create_from_model_path(picker_model(SIZE))
    assert info.value.argument == "model_path"


class _PathLike:
    def __init__(self, value: object) -> None:
        self.value = value

    def __fspath__(self):
        return self.value


def test_path_like_objects(tmp_path):
    model = tmp_path / "picker.tflite"
    model.write_bytes(picker_model(SIZE))
    for path in (_PathLike(str(model)), os.fsencode(model), _PathLike(os.fsencode(model))):
        with ImageSegmenter.create_from_model_path(path, backend="cpu") as seg:  # str or bytes paths
            assert seg.num_classes == 1
    with pytest.raises(InputError) as info:
        ImageSegmenter.create_from_model_path(_PathLike(5))  # not a path at all
    assert info.value.argument == "model_path"


@pytest.mark.parametrize("model", ["picker.tflite", 5, None, np.zeros(64, np.uint8), [1, 2]])
def test_create_from_buffer_needs_bytes(model):
    with pytest.raises(InputError) as info:
        ImageSegmenter.create_from_buffer(model)
    assert info.value.argument == "model"


@pytest.mark.parametrize("data", ["TFL3TFL3TFL3", 5, None, 1.5])
def test_read_model_info_needs_bytes(data):
    with pytest.raises(InputError) as info:
        read_model_info(data)
    assert info.value.argument == "model"
    with pytest.raises(InputError) as info:
        read_model_info(data, "model_buffer")
    assert info.value.argument == "model_buffer"


def test_read_model_info_takes_bytes_like_objects():
    data = picker_model(SIZE, (0, 1))
    for view in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert read_model_info(view).output.shape == (1, SIZE[1], SIZE[0], 2)


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"labels": 5}, "labels"),
        ({"labels": 3.5}, "labels"),
        ({"num_threads": 2**31}, "num_threads"),
        ({"num_threads": 10**20}, "num_threads"),
        ({"output_confidence_masks": np.array([True, False])}, "output_confidence_masks"),
        ({"output_category_mask": np.array([True, False])}, "output_category_mask"),
        ({"output_category_mask": "no"}, "output_category_mask"),
        ({"output_confidence_masks": "False"}, "output_confidence_masks"),
        ({"cpu_threads": 10**6}, "cpu_threads"),
    ],
)
def test_bad_options(options, argument):
    with pytest.raises(InputError) as info:
        ImageSegmenter(picker_model(SIZE), backend="cpu", **options)
    assert info.value.argument == argument


def test_labels_from_an_iterator_are_kept():
    with ImageSegmenter(picker_model(SIZE, (0, 1)), labels=iter(["a", "b"]), backend="cpu") as seg:
        assert seg.labels == ("a", "b")
    with pytest.raises(InputError) as info:
        ImageSegmenter(picker_model(SIZE, (0, 1)), labels=iter(["a", 2]), backend="cpu")
    assert info.value.argument == "labels"


# ----------------------------------------------------------------------------- ImageToTensor
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4, 3), np.float32),
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((1, LARGEST + 1, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
    ids=["float32", "2d", "2-channels", "empty", "too-wide", "list"],
)
def test_image_to_tensor_checks_the_image(image):
    convert = ImageToTensor((8, 8), Normalization((0.0,), (1.0,)))
    with pytest.raises(InputError) as info:
        convert(image)
    assert info.value.argument == "image"


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((1, 8, 8, 3), np.float64),
        np.zeros((1, 8, 7, 3), np.float32),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((1, 8, 8, 6), np.float32)[..., ::2],
        np.zeros((1, 8, 8, 3), np.float32).tolist(),
    ],
    ids=["float64", "wrong-size", "3d", "strided", "list"],
)
def test_image_to_tensor_checks_out(out):
    convert = ImageToTensor((8, 8), Normalization((0.0,), (1.0,)))
    with pytest.raises(InputError) as info:
        convert(np.zeros((5, 5, 3), np.uint8), out=out)
    assert info.value.argument == "out"


def test_image_to_tensor_fills_out_and_takes_any_layout():
    convert = ImageToTensor((8, 8), Normalization((0.0,), (1.0,)))
    image = np.random.default_rng(2).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    out = np.empty((1, 8, 8, 3), np.float32)
    assert convert(image, out=out) is out
    np.testing.assert_array_equal(convert(np.asfortranarray(image)), out)
    wide = np.zeros((9, 14, 3), np.uint8)
    wide[:, ::2] = image
    np.testing.assert_array_equal(convert(wide[:, ::2]), out)


@pytest.mark.parametrize(
    ("tensor_size", "normalization", "argument"),
    [
        ((0, 8), Normalization((0.0,), (1.0,)), "tensor_size"),
        ((8, LARGEST + 1), Normalization((0.0,), (1.0,)), "tensor_size"),
        ((8.5, 8), Normalization((0.0,), (1.0,)), "tensor_size"),
        (8, Normalization((0.0,), (1.0,)), "tensor_size"),
        ((8, 8), (0.0, 1.0), "normalization"),
    ],
)
def test_image_to_tensor_checks_its_options(tensor_size, normalization, argument):
    with pytest.raises(InputError) as info:
        ImageToTensor(tensor_size, normalization)(np.zeros((5, 5, 3), np.uint8))
    assert info.value.argument == argument


# ----------------------------------------------------------------------------- damaged models
def _with_labels_zip(damage: str) -> bytes:
    """A 3-class model whose metadata names ``labels.txt``, with its appended zip damaged: a broken
    deflate stream, an unknown compression method, or the encrypted flag (one byte each)."""
    import zipfile

    model = picker_model(SIZE, (0, 1, 2), labels=["a", "b", "c"])
    model = model[: model.index(b"PK\x03\x04")]
    stream = io.BytesIO(model)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("labels.txt", b"a\nb\nc\n" * 50)
    data = bytearray(stream.getvalue())
    local, central = data.index(b"PK\x03\x04", len(model)), data.index(b"PK\x01\x02", len(model))
    if damage == "deflate stream":
        start = local + 30 + len("labels.txt")
        data[start : start + 6] = b"\xff" * 6
    elif damage == "compression method":
        data[local + 8], data[central + 10] = 99, 99
    else:
        data[local + 6] |= 1
        data[central + 8] |= 1
    return bytes(data)


@pytest.mark.parametrize("damage", ["deflate stream", "compression method", "encrypted"])
def test_a_damaged_labels_file_is_read_as_no_labels_like_a_bad_checksum(damage):
    """zipfile raises zlib.error, NotImplementedError or RuntimeError on these: they escaped
    read_model_info and the constructor. MediaPipe goes on without labels when the file cannot be
    read, as gpu_seg did for a checksum error."""
    data = _with_labels_zip(damage)
    assert read_model_info(data).labels == ()
    with ImageSegmenter.create_from_buffer(data, backend="cpu") as seg:
        assert seg.labels == ()


def test_a_model_whose_own_labels_do_not_fit_names_the_model_not_the_labels_argument():
    data = picker_model(SIZE, (0, 1), labels=["a", "b", "c"])
    with pytest.raises(InputError) as info:
        ImageSegmenter(data, backend="cpu")
    assert info.value.argument == "model" and "labels=" in str(info.value)
    with ImageSegmenter(data, labels=["x", "y"], backend="cpu") as seg:  # the way out it names
        assert seg.labels == ("x", "y")


@pytest.mark.parametrize("path", ["/dev/zero", "fifo"])
def test_a_model_path_that_is_not_a_regular_file_is_refused_before_reading(path, tmp_path):
    """/dev/zero was read until memory ran out; a FIFO blocked for good."""
    if path == "fifo":
        path = tmp_path / "model.tflite"
        os.mkfifo(path)
    with pytest.raises(InputError, match="not a regular file") as info:
        ImageSegmenter.create_from_model_path(path)
    assert info.value.argument == "model_path"


def test_a_model_that_fails_when_it_runs_is_a_gpu_seg_error():
    """A model whose output no operator writes loads, then LiteRT's ValueError escaped segment()."""
    from gpu_seg.errors import GpuSegError

    with ImageSegmenter(picker_model(SIZE, no_operators=True), backend="cpu") as seg:
        with pytest.raises(GpuSegError, match="model"):
            seg.segment(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
