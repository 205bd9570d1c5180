"""Tests of gpu_seg.tools.oracle (``gpu_seg.oracle``): real MediaPipe's CPU post-processing of a
fixed tensor.

Expected values come from hand-written numpy formulas (MediaPipe's semantics as the README's
"Semantics" section states them; ``T2ST:`` comments cite lines of MediaPipe's
``tensors_to_segmentation_calculator_test.cc``) and from :mod:`gpu_seg.reference`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gpu_seg
from gpu_seg import oracle
from gpu_seg.errors import GpuSegError, InputError
from gpu_seg.reference import reference_postprocess

pytestmark = pytest.mark.skipif(not oracle.mediapipe_available(), reason="mediapipe is not installed")

LOGITS = np.array([0.2, 1.5, -0.6, 3.4], np.float32)  # T2ST:46-52
SOFTMAX_DOC = np.array([0.03372, 0.12374, 0.01515, 0.82737])
SIGMOID_DOC = np.array([0.54983, 0.81757, 0.35434, 0.96770])


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(np.asarray(x, np.float64) - np.max(x))
    return e / e.sum()


# ---------------------------------------------------------------------------------------------
# Doc test vectors


def test_test_vector_confidences() -> None:
    tensor = LOGITS.reshape(1, 1, 4)
    none = oracle.mediapipe_postprocess(tensor, "none", output_category_mask=False).confidence_masks
    sigmoid = oracle.mediapipe_postprocess(tensor, "sigmoid", output_category_mask=False).confidence_masks
    softmax = oracle.mediapipe_postprocess(tensor, "softmax", output_category_mask=False).confidence_masks
    assert none.shape == sigmoid.shape == softmax.shape == (4, 1, 1)
    np.testing.assert_array_equal(none[:, 0, 0], LOGITS)
    np.testing.assert_allclose(sigmoid[:, 0, 0], _sigmoid64(LOGITS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(softmax[:, 0, 0], _softmax64(LOGITS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(sigmoid[:, 0, 0], SIGMOID_DOC, rtol=0, atol=1e-5)  # doc: 5 decimals
    np.testing.assert_allclose(softmax[:, 0, 0], SOFTMAX_DOC, rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_test_vector_category(activation: str) -> None:
    # A 1x1 tensor stretched to 3x2: every output pixel samples the single logit vector.
    result = oracle.mediapipe_postprocess(LOGITS.reshape(1, 1, 4), activation, output_size=(3, 2))
    np.testing.assert_array_equal(result.category_mask, np.full((2, 3), 3, np.uint8))
    assert result.confidence_masks.shape == (4, 2, 3)


# ---------------------------------------------------------------------------------------------
# One channel


ONE_CHANNEL = np.array(
    [[-3.0, -0.5, 0.0, 0.25], [0.5, 0.5001, 1.0, 4.0], [-1e-6, 1e-6, 0.49, 0.51]], np.float32
)[:, :, None]


def test_one_channel_sigmoid_threshold() -> None:
    result = oracle.mediapipe_postprocess(ONE_CHANNEL, "sigmoid")
    x = ONE_CHANNEL[:, :, 0]
    np.testing.assert_array_equal(result.category_mask, np.where(_sigmoid64(x) > 0.5, 0, 255))
    np.testing.assert_allclose(result.confidence_masks[0], _sigmoid64(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("activation", ["none", "softmax"])
def test_one_channel_threshold_on_raw_value(activation: str) -> None:
    result = oracle.mediapipe_postprocess(ONE_CHANNEL, activation)
    x = ONE_CHANNEL[:, :, 0]
    np.testing.assert_array_equal(result.category_mask, np.where(x > np.float32(0.5), 0, 255))
    expected = np.ones_like(x) if activation == "softmax" else x
    np.testing.assert_array_equal(result.confidence_masks[0], expected)


def test_one_channel_softmax_is_one_after_resize() -> None:
    tensor = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32) * 10
    result = oracle.mediapipe_postprocess(tensor, "softmax", output_size=(9, 7))
    np.testing.assert_array_equal(result.confidence_masks, np.ones((1, 7, 9), np.float32))


# ---------------------------------------------------------------------------------------------
# Agreement with gpu_seg.reference


def _align_corners_logits(tensor: np.ndarray, width: int, height: int) -> np.ndarray:
    """Doc section 4: align-corners bilinear of the raw logits, float32, vertical lerp first."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1)
        pos = np.arange(n_out, dtype=np.float32) * scale
        lo = np.maximum(np.floor(pos), np.float32(0))
        hi = np.minimum(np.ceil(pos), np.float32(n_in - 1))
        frac = np.clip(pos - lo, np.float32(0), np.float32(1)).astype(np.float32)
        return lo.astype(np.intp), hi.astype(np.intp), frac

    y0, y1, ty = axis(tensor.shape[0], height)
    x0, x1, tx = axis(tensor.shape[1], width)
    ty, tx = ty[:, None, None], tx[None, :, None]
    top_left, bottom_left = tensor[y0][:, x0], tensor[y1][:, x0]
    top_right, bottom_right = tensor[y0][:, x1], tensor[y1][:, x1]
    left = top_left + (bottom_left - top_left) * ty
    right = top_right + (bottom_right - top_right) * ty
    return left + (right - left) * tx


def _category_margin(tensor: np.ndarray, activation: str, width: int, height: int) -> np.ndarray:
    """How far each output pixel is from changing its category (top-two gap, or |v - 0.5|)."""
    values = _align_corners_logits(tensor, width, height).astype(np.float64)
    if activation == "sigmoid":
        values = _sigmoid64(values)
    if values.shape[-1] == 1:
        return np.abs(values[..., 0] - 0.5)
    top_two = np.sort(values, axis=-1)[..., -2:]
    return top_two[..., 1] - top_two[..., 0]


_GEOMETRIES = [
    # name, (tensor height, tensor width), output (width, height)
    ("up-doc", (12, 16), (37, 50)),
    ("up-odd", (6, 5), (13, 17)),
    ("same", (9, 11), None),
    ("down-2x", (30, 20), (10, 15)),
    ("down-odd", (17, 33), (7, 11)),
    ("up-down", (8, 40), (100, 3)),
]
_ACTIVATIONS = ["none", "sigmoid", "softmax"]
_CHANNELS = [1, 2, 5, 21]
# Each activation meets every channel count across the geometries: 18 MediaPipe sessions.
PARITY_CASES = [
    pytest.param(
        tensor_hw,
        output_size,
        activation,
        _CHANNELS[(i + j) % len(_CHANNELS)],
        id=f"{name}-{activation}-C{_CHANNELS[(i + j) % len(_CHANNELS)]}",
    )
    for i, (name, tensor_hw, output_size) in enumerate(_GEOMETRIES)
    for j, activation in enumerate(_ACTIVATIONS)
]


@pytest.mark.parametrize(("tensor_hw", "output_size", "activation", "channels"), PARITY_CASES)
def test_agrees_with_reference(
    tensor_hw: tuple[int, int], output_size: tuple[int, int] | None, activation: str, channels: int
) -> None:
    seed = zlib.crc32(repr((tensor_hw, output_size, channels, activation)).encode())
    rng = np.random.default_rng(seed)
    tensor = (rng.normal(size=(*tensor_hw, channels)) * 4).astype(np.float32)
    _check_parity(tensor, activation, output_size)


@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_agrees_with_reference_big_logits(activation: str) -> None:
    rng = np.random.default_rng(11)
    tensor = (rng.normal(size=(10, 14, 5)) * 1000).astype(np.float32)
    _check_parity(tensor, activation, (31, 23))


def _check_parity(tensor: np.ndarray, activation: str, output_size: tuple[int, int] | None) -> None:
    height, width = tensor.shape[:2]
    if output_size is not None:
        width, height = output_size
    got = oracle.mediapipe_postprocess(tensor, activation, output_size)
    want = reference_postprocess(tensor, activation, output_size)

    assert got.confidence_masks.shape == want.confidence_masks.shape
    diff = np.abs(got.confidence_masks.astype(np.float64) - want.confidence_masks)
    if activation == "none":
        tolerance = np.maximum(2e-5, 1e-5 * np.abs(want.confidence_masks.astype(np.float64)))
    else:
        tolerance = 2e-5
    assert np.all(diff <= tolerance), f"max |diff| {diff.max():.3g}"

    mismatch = got.category_mask != want.category_mask
    if mismatch.any():
        margin = _category_margin(tensor, activation, width, height)
        assert np.all(margin[mismatch] < 1e-5), f"{mismatch.sum()} category pixels differ"


# ---------------------------------------------------------------------------------------------
# Result structure and arguments


def test_result_layout() -> None:
    tensor = np.random.default_rng(0).normal(size=(1, 6, 8, 3)).astype(np.float64)
    result = oracle.mediapipe_postprocess(tensor, "softmax", output_size=(10, 7))
    assert result.backend == "mediapipe"
    assert result.confidence_masks.dtype == np.float32
    assert result.confidence_masks.shape == (3, 7, 10)
    assert result.confidence_masks.flags.c_contiguous
    assert result.confidence_masks.flags.writeable
    assert result.category_mask.dtype == np.uint8
    assert result.category_mask.shape == (7, 10)
    assert result.category_mask.flags.c_contiguous
    assert result.category_mask.flags.writeable


def test_requested_outputs_only() -> None:
    tensor = np.zeros((4, 4, 2), np.float32)
    only_confidence = oracle.mediapipe_postprocess(tensor, output_category_mask=False)
    assert only_confidence.category_mask is None
    assert only_confidence.confidence_masks.shape == (2, 4, 4)
    only_category = oracle.mediapipe_postprocess(tensor, output_confidence_masks=False)
    assert only_category.confidence_masks is None
    assert only_category.category_mask.shape == (4, 4)


def test_two_dimensional_tensor_and_activation_enum() -> None:
    from gpu_seg.types import Activation

    tensor = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    result = oracle.mediapipe_postprocess(tensor, Activation.SIGMOID)
    assert result.confidence_masks.shape == (1, 3, 4)
    np.testing.assert_allclose(result.confidence_masks[0], _sigmoid64(tensor), rtol=0, atol=1e-6)


def test_confidence_only_accepts_output_dimension_one() -> None:
    tensor = np.random.default_rng(1).normal(size=(4, 5, 3)).astype(np.float32)
    for size in [(1, 1), (1, 6), (7, 1)]:
        got = oracle.mediapipe_postprocess(tensor, "softmax", size, output_category_mask=False)
        want = reference_postprocess(tensor, "softmax", size, output_category_mask=False)
        np.testing.assert_allclose(got.confidence_masks, want.confidence_masks, rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"tensor": np.zeros((1, 1, 2, 2, 3), np.float32)}, "tensor"),
        ({"tensor": np.zeros((2, 4, 4, 3), np.float32)}, "tensor"),
        ({"tensor": np.zeros((4, 4, 0), np.float32)}, "tensor"),
        ({"tensor": np.zeros((4, 4, 2), np.int32)}, "tensor"),
        ({"output_size": (0, 5)}, "output_size"),
        ({"output_size": (5, -1)}, "output_size"),
        ({"output_size": (5.0, 5)}, "output_size"),
        ({"output_size": (1, 5)}, "output_size"),  # category mask with width 1
        ({"output_size": (5, 1)}, "output_size"),  # category mask with height 1
        ({"activation": "relu"}, "activation"),
        ({"output_confidence_masks": False, "output_category_mask": False}, "output_confidence_masks"),
    ],
)
def test_bad_input_raises_input_error(kwargs: dict, argument: str) -> None:
    kwargs = {"tensor": np.zeros((4, 4, 2), np.float32), **kwargs}
    with pytest.raises(InputError) as excinfo:
        oracle.mediapipe_postprocess(**kwargs)
    assert excinfo.value.argument == argument


def test_mediapipe_failure_raises_gpu_seg_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oracle, "build_constant_model", lambda tensor, activation: b"not a tflite model")
    with pytest.raises(GpuSegError, match="ImageSegmenter failed"):
        oracle.mediapipe_postprocess(np.zeros((4, 4, 2), np.float32))


def test_mask_count_mismatch_raises_gpu_seg_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_result = SimpleNamespace(confidence_masks=[], category_mask=None)
    monkeypatch.setattr(oracle, "_segment", lambda *args: fake_result)
    with pytest.raises(GpuSegError, match="0 confidence masks for a tensor with 2 channels"):
        oracle.mediapipe_postprocess(np.zeros((4, 4, 2), np.float32))


def test_build_constant_model() -> None:
    model = oracle.build_constant_model(np.zeros((3, 5, 2), np.float32), "sigmoid")
    assert isinstance(model, bytes)
    assert model[4:8] == b"TFL3"
    with pytest.raises(InputError):
        oracle.build_constant_model(np.zeros((3, 5, 2), np.float32), "tanh")


def test_version_and_availability() -> None:
    assert oracle.mediapipe_available() is True
    version = oracle.mediapipe_version()
    assert isinstance(version, str) and version


def test_unavailable_error_type() -> None:
    error = oracle.OracleUnavailableError()
    assert isinstance(error, GpuSegError)
    assert isinstance(error, ImportError)
    assert 'pip install "gpu_seg[mediapipe]"' in str(error)


def test_import_without_mediapipe() -> None:
    """Importing the oracle needs no mediapipe; using it raises OracleUnavailableError."""
    code = (
        "import sys\n"
        "sys.modules['mediapipe'] = None\n"
        "import numpy as np\n"
        "import gpu_seg\n"
        "import gpu_seg.tools.oracle as o\n"
        "assert gpu_seg.oracle is o\n"
        "assert not o.mediapipe_available()\n"
        "try:\n"
        "    o.mediapipe_postprocess(np.zeros((2, 2, 2), np.float32))\n"
        "except o.OracleUnavailableError as e:\n"
        "    assert isinstance(e, ImportError) and 'gpu_seg[mediapipe]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no OracleUnavailableError')\n"
        "print('ok')\n"
    )
    root = Path(gpu_seg.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_oracle_imports_as_a_module_too():
    """``from gpu_seg.oracle import ...`` as well as ``gpu_seg.oracle.name`` (the README's form)."""
    import gpu_seg
    from gpu_seg.oracle import mediapipe_postprocess

    assert mediapipe_postprocess is gpu_seg.oracle.mediapipe_postprocess
