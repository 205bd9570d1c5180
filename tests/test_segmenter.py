"""gpu_seg.segmenter.ImageSegmenter: options, errors, running modes, stats, lifetime.

Small models built in the test (tests/tflite_models.py) keep these fast; the MediaPipe parity on
real photos is in test_segmenter_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
pytest.importorskip("mediapipe.tasks", reason="mediapipe is not installed")

from gpu_seg import Activation, ClosedError, GpuSegError, InputError, reference_postprocess
from gpu_seg.segmenter import ImageSegmenter, ImageToTensor, Normalization

from .segmenter_support import selfie_model
from .tflite_models import picker_model

SIZE = (24, 16)  # model input (width, height)


def _image(width: int = 40, height: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _expected(image: np.ndarray, picks, activation: str, normalization=((0.0,), (255.0,))):
    """The preprocessing (tested against MediaPipe) + the picked channels + the numpy reference."""
    tensor = ImageToTensor(SIZE, Normalization(*normalization))(image)[..., list(picks)]
    return reference_postprocess(tensor, activation, (image.shape[1], image.shape[0]))


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_masks_at_image_size_with_the_models_activation(activation):
    picks = (2, 0, 1)
    model = picker_model(SIZE, picks, activation=activation, labels=["b", "r", "g"])
    image = _image()
    with ImageSegmenter(model, output_category_mask=True, backend="cpu") as segmenter:
        assert segmenter.activation is Activation(activation)
        assert segmenter.labels == ("b", "r", "g")
        result = segmenter.segment(image)
    expected = _expected(image, picks, activation)
    assert result.confidence_masks.shape == (3, 30, 40) and result.confidence_masks.dtype == np.float32
    assert result.category_mask.shape == (30, 40) and result.category_mask.dtype == np.uint8
    np.testing.assert_array_equal(result.confidence_masks, expected.confidence_masks)
    np.testing.assert_array_equal(result.category_mask, expected.category_mask)
    assert result.backend == "cpu" and result.timestamp_ms is None


def test_gl_backend_gives_the_masks_too():
    model = picker_model(SIZE, (0, 1), activation="softmax")
    image = _image(33, 21)
    with ImageSegmenter(model, output_category_mask=True, backend="auto") as segmenter:
        result = segmenter.segment(image)
    expected = _expected(image, (0, 1), "softmax")
    np.testing.assert_allclose(result.confidence_masks, expected.confidence_masks, atol=2e-6)
    assert np.mean(result.category_mask == expected.category_mask) > 0.999


def test_only_the_requested_masks():
    model = picker_model(SIZE)
    with ImageSegmenter(model, backend="cpu") as segmenter:  # defaults: confidence only
        result = segmenter.segment(_image())
    assert result.category_mask is None and result.confidence_masks.shape == (1, 30, 40)
    with ImageSegmenter(
        model, output_confidence_masks=False, output_category_mask=True, backend="cpu"
    ) as seg:
        result = seg.segment(_image())
    assert result.confidence_masks is None and result.category_mask.shape == (30, 40)
    with pytest.raises(InputError):
        ImageSegmenter(model, output_confidence_masks=False, output_category_mask=False)


def test_rgba_and_non_contiguous_images():
    model = picker_model(SIZE, (0, 1, 2))
    rgb = _image(50, 20)
    rgba = np.concatenate([rgb, np.full((20, 50, 1), 7, np.uint8)], axis=-1)
    with ImageSegmenter(model, backend="cpu") as segmenter:
        expected = segmenter.segment(rgb).confidence_masks
        np.testing.assert_array_equal(segmenter.segment(rgba).confidence_masks, expected)
        wide = np.zeros((20, 100, 3), np.uint8)
        wide[:, ::2] = rgb
        np.testing.assert_array_equal(segmenter.segment(wide[:, ::2]).confidence_masks, expected)


def test_model_without_metadata_needs_explicit_values():
    model = picker_model(SIZE, (0, 1), metadata=False)
    with pytest.raises(InputError) as info:
        ImageSegmenter(model)
    assert info.value.argument == "normalization"
    with pytest.raises(InputError) as info:
        ImageSegmenter(model, normalization=(127.5, 127.5))
    assert info.value.argument == "activation"
    with ImageSegmenter(
        model, normalization=(127.5, 127.5), activation="softmax", labels=["x", "y"], backend="cpu"
    ) as segmenter:
        assert segmenter.labels == ("x", "y")
        image = _image()
        result = segmenter.segment(image)
    expected = _expected(image, (0, 1), "softmax", ((127.5,), (127.5,)))
    np.testing.assert_array_equal(result.confidence_masks, expected.confidence_masks)


def test_explicit_values_override_the_metadata():
    model = picker_model(SIZE, (0,), activation="none", labels=["selfie"])
    image = _image()
    with ImageSegmenter(
        model, activation="sigmoid", normalization=([10.0], [20.0]), labels=["person"], backend="cpu"
    ) as segmenter:
        assert segmenter.activation is Activation.SIGMOID and segmenter.labels == ("person",)
        result = segmenter.segment(image)
    expected = _expected(image, (0,), "sigmoid", ((10.0,), (20.0,)))
    np.testing.assert_array_equal(result.confidence_masks, expected.confidence_masks)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"labels": ["a", "b"]}, "labels"),
        ({"labels": "ab"}, "labels"),
        ({"normalization": (1.0,)}, "normalization"),
        ({"normalization": (1.0, 0.0)}, "normalization"),
        ({"normalization": ((1.0, 2.0, 3.0), (1.0, 1.0, 1.0))}, "normalization"),
        ({"activation": "relu"}, "activation"),
        ({"running_mode": "live_stream"}, "running_mode"),
        ({"num_threads": 0}, "num_threads"),
        ({"num_threads": True}, "num_threads"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_bad_options(options, argument):
    with pytest.raises(InputError) as info:
        ImageSegmenter(picker_model(SIZE), **options)
    assert info.value.argument == argument


def test_model_errors(tmp_path):
    with pytest.raises(InputError) as info:
        ImageSegmenter.create_from_model_path(tmp_path / "missing.tflite")
    assert info.value.argument == "model_path"
    (tmp_path / "text.tflite").write_text("hello")
    with pytest.raises(InputError) as info:
        ImageSegmenter.create_from_model_path(tmp_path / "text.tflite")
    assert info.value.argument == "model"
    selfie = selfie_model().read_bytes()
    for broken in (selfie[: len(selfie) // 3], selfie[: selfie.index(b"PK\x03\x04") - 4]):
        with pytest.raises(InputError) as info:
            ImageSegmenter(broken)
        assert info.value.argument == "model"
    with pytest.raises(InputError) as info:
        ImageSegmenter("model.tflite")  # a path where bytes are expected
    assert info.value.argument == "model"


def test_output_must_be_1_h_w_c():
    model = picker_model(SIZE, (0, 1), reshape_to=[SIZE[1] * SIZE[0], 2])
    with pytest.raises(InputError, match=r"not \(1, h, w, C\)") as info:
        ImageSegmenter(model)
    assert info.value.argument == "model"


def test_the_second_of_two_outputs_holds_the_masks():
    model = picker_model(SIZE, (1,), decoy_output=True)
    image = _image()
    with ImageSegmenter(model, backend="cpu") as segmenter:
        result = segmenter.segment(image)
    np.testing.assert_array_equal(result.confidence_masks, _expected(image, (1,), "none").confidence_masks)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 2), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        np.zeros((40000, 1, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_bad_images(image):
    with ImageSegmenter(picker_model(SIZE), backend="cpu") as segmenter:
        with pytest.raises(InputError) as info:
            segmenter.segment(image)
        assert info.value.argument == "image"


def test_running_modes_and_timestamps():
    model = picker_model(SIZE)
    image = _image()
    with ImageSegmenter(model, backend="cpu") as segmenter:
        with pytest.raises(InputError) as info:
            segmenter.segment_for_video(image, 0)
        assert info.value.argument == "running_mode"
    with ImageSegmenter(model, running_mode="video", backend="cpu") as segmenter:
        with pytest.raises(InputError) as info:
            segmenter.segment(image)
        assert info.value.argument == "running_mode"
        first = segmenter.segment_for_video(image, 0)
        assert first.timestamp_ms == 0
        for bad in (0, -5):
            with pytest.raises(InputError) as info:
                segmenter.segment_for_video(image, bad)
            assert info.value.argument == "timestamp_ms"
        for bad in (1.5, True, "33"):
            with pytest.raises(InputError) as info:
                segmenter.segment_for_video(image, bad)
            assert info.value.argument == "timestamp_ms"
        with pytest.raises(InputError) as info:
            segmenter.segment_for_video(image[..., 0], 40)
        assert info.value.argument == "frame"
        second = segmenter.segment_for_video(image, np.int64(33))
        assert second.timestamp_ms == 33
        np.testing.assert_array_equal(first.confidence_masks, second.confidence_masks)


def test_stats_and_lifetime():
    segmenter = ImageSegmenter(picker_model(SIZE), output_category_mask=True, backend="cpu", num_threads=1)
    for _ in range(3):
        result = segmenter.segment(_image())
    stats = segmenter.stats
    assert stats["frames"] == 3
    assert stats["model_ms"] > 0 and stats["postprocess_ms"] > 0 and stats["preprocess_ms"] > 0
    assert stats["last_model_ms"] == result.model_ms
    assert stats["postprocessor"]["frames"] == 3 and stats["postprocessor"]["cpu_frames"] == 3
    assert "closed" not in repr(segmenter)
    segmenter.close()
    segmenter.close()
    assert "closed" in repr(segmenter)
    with pytest.raises(ClosedError):
        segmenter.segment(_image())
    assert isinstance(ClosedError("x"), GpuSegError)


@pytest.mark.parametrize("call", ["close", "segment"])
def test_an_event_callback_may_use_the_segmenter(call):
    """``on_event`` callbacks ran while the segmenter held its own lock: one that closed the
    segmenter, or segmented another image, on a context loss deadlocked for good."""
    import threading

    from gpu_seg import testing

    holder, seen, outcome = {}, [], []
    image = _image()

    def on_event(event) -> None:
        seen.append(event.kind)
        segmenter = holder["segmenter"]
        if call == "close":
            segmenter.close()
        elif len(seen) == 1:
            outcome.append(segmenter.segment(image).backend)

    segmenter = ImageSegmenter(picker_model(SIZE), output_category_mask=True, backend="gl", on_event=on_event)
    holder["segmenter"] = segmenter
    segmenter.segment(image)
    testing.lose_context(segmenter.postprocessor)
    worker = threading.Thread(target=lambda: outcome.append(segmenter.segment(image).backend), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the segmenter deadlocked in its own callback"  # (left unclosed)
    try:
        assert seen and seen[0] == "context_lost"
        assert outcome[-1] == "gl"  # the frame hit by the loss was recomputed and returned
        if call == "close":
            with pytest.raises(ClosedError):
                segmenter.segment(image)
        elif call == "segment":
            assert outcome[0] == "gl"
    finally:
        segmenter.close()
