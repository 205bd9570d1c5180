"""The fast CPU path (gpu_seg.cpu) against the numpy reference (the specification) and MediaPipe.

Confidence masks must be bit-identical to the reference (NaN compared as NaN: its payload is not
specified), category masks identical. The case matrix is the one the GL parity tests use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpu_seg import cpu, reference
from gpu_seg.tools.oracle import mediapipe_postprocess

from .mediapipe_agreement import compare


def test_the_fast_cpu_path_is_available():
    # numba is a runtime dependency: a broken install must fail here, not skip the tests below.
    assert cpu.available(), cpu.unavailable_reason()


ACTIVATIONS = ["none", "sigmoid", "softmax"]
CHANNELS = [1, 2, 3, 4, 5, 8, 21, 64]
# (tensor H, W) -> output (width, height), as in test_parity.py
GEOMETRIES = {
    "same": ((12, 10), (10, 12)),
    "upscale": ((9, 12), (37, 29)),
    "downscale": ((30, 40), (17, 13)),
    "odd-ratio": ((13, 11), (24, 31)),
    "half": ((24, 16), (8, 12)),
}


@pytest.fixture(scope="module")
def fast():
    cpu.warm_up()
    with cpu.FastCPU() as instance:
        yield instance


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Bit-identical, except that any NaN equals any NaN (the payload is not part of the spec)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind == "f":
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        got, want = got[~nan], want[~nan]
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def run_fast(fast, tensor, activation, size, dtype="float32", channels=None):
    width, height = size
    count = tensor.shape[2] if channels is None else len(channels)
    conf = np.empty((count, height, width), dtype)
    fast.confidence_masks(tensor, activation, width, height, conf, dtype, channels)
    cat = np.empty((height, width), np.uint8)
    fast.category_mask(tensor, activation, width, height, cat)
    return conf, cat


def check(fast, tensor, activation, size, dtype="float32", channels=None):
    tensor = np.ascontiguousarray(tensor, np.float32)
    conf, cat = run_fast(fast, tensor, activation, size, dtype, channels)
    assert_same_bits(
        conf, reference.confidence_masks(tensor, activation, size, dtype=dtype, channels=channels)
    )
    np.testing.assert_array_equal(cat, reference.category_mask(tensor, activation, size))
    return conf, cat


def model_like(rng, shape):
    h, w, c = shape
    coarse = rng.standard_normal((h // 8 + 2, w // 8 + 2, c)).astype(np.float32) * 6
    ys = np.linspace(0, coarse.shape[0] - 1.001, h)
    xs = np.linspace(0, coarse.shape[1] - 1.001, w)
    tensor = coarse[ys.astype(int)][:, xs.astype(int)] + rng.standard_normal(shape).astype(np.float32) * 0.3
    tensor[..., 0] += 2.0
    return np.ascontiguousarray(tensor, np.float32)


# ----------------------------------------------------------------------------- the parity matrix
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_random_logits_match_the_reference_bit_for_bit(fast, activation, channels):
    for index, ((h, w), size) in enumerate(GEOMETRIES.values()):
        seed = ACTIVATIONS.index(activation) * 1000 + channels * 10 + index
        rng = np.random.default_rng(seed)
        for scale in (1.0, 8.0, 50.0):
            tensor = rng.standard_normal((h, w, channels)).astype(np.float32) * np.float32(scale)
            check(fast, tensor, activation, size)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((64, 64, 6), (320, 240)),
        ((96, 80, 21), (157, 203)),
        ((32, 48, 2), (640, 480)),
        ((50, 50, 1), (256, 144)),
    ],
)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_model_like_tensors(fast, shape, size, activation):
    rng = np.random.default_rng(sum(shape) + size[0])
    check(fast, model_like(rng, shape), activation, size)


@pytest.mark.parametrize("channels", [1, 2, 5, 21])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_constant_tensors_tie_to_lowest_index(fast, activation, channels):
    check(fast, np.full((7, 9, channels), 0.75, np.float32), activation, (23, 11))


@pytest.mark.parametrize("channels", [1, 3, 8])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_very_negative_logits(fast, activation, channels):
    rng = np.random.default_rng(channels)
    check(fast, rng.uniform(-400.0, -100.0, (10, 8, channels)), activation, (19, 21))


@pytest.mark.parametrize("size", [(9, 8), (23, 17), (4, 3), (9, 20)])
@pytest.mark.parametrize("channels", [1, 3, 6])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_and_inf(fast, activation, channels, size):
    rng = np.random.default_rng(channels * 31 + size[0])
    tensor = (rng.standard_normal((8, 9, channels)) * 3).astype(np.float32)
    tensor[1, 2, 0] = np.nan
    tensor[4, 4, channels - 1] = np.inf
    tensor[6, 1, 0] = -np.inf
    tensor[2, 7, channels // 2] = np.nan
    tensor[7, 8, 0] = np.float32(3e38)  # b - a overflows next to -3e38
    tensor[7, 7, 0] = np.float32(-3e38)
    for dtype in ("float32", "float16", "uint8"):
        check(fast, tensor, activation, size, dtype)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((7, 5), (2, 3)), ((8, 8), (4, 4)), ((1, 5), (3, 7)), ((5, 1), (9, 3)), ((9, 9), (9, 1)),
        ((9, 9), (1, 9)), ((1, 1), (5, 4)), ((33, 17), (60, 33)), ((12, 10), (10, 40)), ((12, 10), (40, 12)),
    ],
)  # fmt: skip
def test_degenerate_and_one_axis_geometries(fast, shape, size):
    rng = np.random.default_rng(sum(shape) * 7 + sum(size))
    for channels in (1, 4):
        tensor = rng.standard_normal((*shape, channels)).astype(np.float32) * 5
        tensor.flat[rng.integers(tensor.size)] = np.nan  # NaN * 0 still spreads on one-axis resizes
        for activation in ACTIVATIONS:
            check(fast, tensor, activation, size)


def test_more_than_256_classes_wrap(fast):
    rng = np.random.default_rng(300)
    tensor = rng.standard_normal((6, 5, 300)).astype(np.float32)
    tensor[..., 260] += 10.0
    _, cat = check(fast, tensor, "softmax", (11, 13))
    assert (cat == 260 % 256).any()


# ----------------------------------------------------------------------------- encodings and subsets
@pytest.mark.parametrize("dtype", ["float16", "uint8"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_encodings_match_the_reference(fast, activation, dtype):
    rng = np.random.default_rng(len(dtype) + ACTIVATIONS.index(activation))
    for (h, w), size in GEOMETRIES.values():
        for channels in (1, 3, 8):
            tensor = rng.standard_normal((h, w, channels)).astype(np.float32) * 4
            check(fast, tensor, activation, size, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_encoding_edge_values(fast, dtype):
    """Rounding boundaries, float16 overflow and subnormals, uint8 clamping, NaN and infinities."""
    steps = (np.arange(-3, 260, dtype=np.float32) + np.float32(0.5)) / np.float32(255)
    f16 = np.array([65504, 65519.99, 65520, 1e6, 6.1e-5, 6.0e-5, 3e-8, 2.98e-8, 5.96e-8, 1e-9], np.float32)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.0, 255.5], np.float32)
    values = np.concatenate([steps, np.nextafter(steps, 2), np.nextafter(steps, -2), f16, -f16, special])
    tensor = np.resize(values, 17 * 19 * 3).reshape(17, 19, 3)
    for size in ((19, 17), (40, 31), (7, 5)):
        check(fast, tensor, "none", size, dtype)


@pytest.mark.parametrize("hardware", [False, True], ids=["software", "instruction"])
def test_float16_conversion_matches_numpy_bit_for_bit(hardware):
    """Both float32 -> float16 conversions, NaN payloads included, on a sample of all 2**32 inputs
    and every input near the subnormal, overflow and NaN boundaries."""
    from numba import njit

    from gpu_seg.cpu import _confidence_kernels as kernels

    if hardware and not kernels.HARDWARE_HALF:
        pytest.skip("no float16 conversion instruction for numba's target here")

    @njit
    def convert(values, bits, out, hardware):
        for i in range(values.shape[0]):
            if hardware:
                out[i] = kernels._hardware_half_bits(values[i], bits[i])
            else:
                out[i] = kernels._half_bits(bits[i])

    spans = [np.arange(0, 1 << 32, 4093, dtype=np.uint64)]
    for edge in (0x33000000, 0x387FE000, 0x477FE000, 0x7F800000):
        for sign in (0, 0x80000000):
            spans.append(np.arange(edge - (1 << 16), edge + (1 << 16), dtype=np.uint64) + sign)
    bits = np.concatenate(spans).astype(np.uint32)
    values = bits.view(np.float32)
    got = np.empty(bits.size, np.uint16)
    convert(values, bits, got, hardware)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("channels", [[2], [3, 0], [1, 1, 4], [4, 3, 2, 1, 0]])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_channel_subsets(fast, activation, channels):
    rng = np.random.default_rng(len(channels))
    tensor = model_like(rng, (20, 24, 5))
    for size in ((24, 20), (61, 47), (9, 8)):
        for dtype in ("float32", "float16", "uint8"):
            check(fast, tensor, activation, size, dtype, channels)


# ----------------------------------------------------------------------------- threads, warm-up, API
def counting(run, counts):
    """``run`` that also records how many tasks each call hands out."""

    def wrapper(task, count):
        counts.append(count)
        run(task, count)

    return wrapper


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_threads_give_identical_results(activation):
    rng = np.random.default_rng(5)
    tensor = model_like(rng, (64, 64, 6))
    tensor[10, 10, 2] = np.nan
    size = (661, 500)
    results = []
    for threads in (1, 2, 5):
        with cpu.FastCPU(threads=threads) as fast:
            tasks: list[int] = []
            fast._pool.run = counting(fast._pool.run, tasks)
            results.append(run_fast(fast, tensor, activation, size))
            results.append(run_fast(fast, tensor, activation, size, "uint8", [4, 1]))
            assert max(tasks) == (1 if threads == 1 else 3 * threads)  # the rows really were split
    for i in range(2, len(results)):
        for got, want in zip(results[i], results[i % 2], strict=True):
            assert_same_bits(got, want)
    assert_same_bits(results[0][0], reference.confidence_masks(tensor, activation, size))
    np.testing.assert_array_equal(results[0][1], reference.category_mask(tensor, activation, size))


def test_warm_up_leaves_nothing_to_compile():
    """After warm_up(), frames of any activation, dtype, channel count or subset compile nothing."""
    from gpu_seg.cpu import _category_kernels, _confidence_kernels

    assert cpu.warm_up() >= 0.0
    kernels = [
        getattr(module, name)
        for module in (_category_kernels, _confidence_kernels)
        for name in dir(module)
        if hasattr(getattr(module, name), "signatures")
    ]
    before = {k: list(k.signatures) for k in kernels}
    assert sum(map(len, before.values())) >= 9
    rng = np.random.default_rng(1)
    for shortcut in (None, False):
        with cpu.FastCPU(threads=2, shortcut=shortcut) as fast:
            for channels in (1, 2, 21):
                tensor = rng.standard_normal((40, 30, channels)).astype(np.float32)
                tensor.flags.writeable = False  # a read-only tensor is no new specialisation
                for activation in ACTIVATIONS:
                    for dtype in ("float32", "float16", "uint8"):
                        run_fast(fast, tensor, activation, (97, 83), dtype)
                    run_fast(fast, tensor, activation, (30, 40), "float32", [channels - 1])
    assert {k: list(k.signatures) for k in kernels} == before


def test_available_says_why_without_numba():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from gpu_seg import cpu\n"
        "assert not cpu.available()\n"
        "print(cpu.unavailable_reason())\n"
        "try:\n    cpu.FastCPU\nexcept cpu.FastCPUUnavailableError as e:\n    print('raised', e)\n"
    )
    source = str(Path(cpu.__file__).parents[2])  # the gpu_seg under test, not another installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "numba" in result.stdout and "raised" in result.stdout


def test_available_and_reason_when_numba_is_there():
    assert cpu.available() and cpu.unavailable_reason() is None
    cpu.warm_up()
    details = cpu.info()
    assert details["available"] and details["reason"] is None and details["warm"]
    assert details["default_threads"] == cpu.FastCPU().threads >= 1
    assert details["float16"] in ("instruction", "software") and details["numba"]


def test_bad_arguments_are_rejected(fast):
    tensor = np.zeros((4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="out"):
        fast.confidence_masks(tensor, "none", 8, 8, np.empty((2, 8, 9), np.float32))
    with pytest.raises(ValueError, match="out"):
        fast.confidence_masks(tensor, "none", 8, 8, np.empty((2, 8, 8), np.float32), "uint8")
    with pytest.raises(ValueError, match="out"):
        fast.category_mask(tensor, "none", 8, 8, np.empty((8, 8), np.int32))
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            cpu.FastCPU(threads=threads)


@pytest.mark.parametrize("channels", [[3], [-1], [100_000_000], [0, 3], [1.0], ["1"]])
def test_channels_out_of_range_are_refused_not_read(fast, channels):
    """The kernels do not check indices: an index past the tensor read other memory (garbage, or
    a segfault), a negative one wrapped around."""
    tensor = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    out = np.empty((len(channels), 4, 5), np.float32)
    with pytest.raises(ValueError, match="channels"):
        fast.confidence_masks(tensor, "none", 5, 4, out, channels=channels)


def test_closing_during_a_frame_leaves_no_worker_thread():
    """``close()`` from another thread while a CPU frame computes its confidence masks: the frame's
    category kernel restarted the worker pool of the closed processor, whose thread then lived as
    long as the processor object. Now the frame ends with ClosedError (or had finished) and no
    worker thread is left."""
    import threading
    import time

    import gpu_seg

    tensor = model_like(np.random.default_rng(5), (257, 257, 21))
    leaks = []
    for attempt in range(3):
        before = set(threading.enumerate())  # other tests' pools (the module's fixture) stay
        pp = gpu_seg.SegmentationPostprocessor("softmax", True, True, backend="cpu", cpu_threads=2)
        pp.process(tensor, (64, 64))  # warm
        outcome = {}

        def frame(pp=pp, outcome=outcome):
            try:
                outcome["backend"] = pp.process(tensor, (1920, 1080)).backend
            except gpu_seg.ClosedError as exc:
                outcome["closed"] = str(exc)

        thread = threading.Thread(target=frame)
        thread.start()
        time.sleep(0.05 + 0.02 * attempt)  # inside the confidence pass (hundreds of ms here)
        pp.close()
        thread.join(60)
        assert outcome, "the frame neither finished nor raised ClosedError"
        time.sleep(0.1)
        leaks += [t.name for t in set(threading.enumerate()) - before if t.name.startswith("gpu_seg-cpu_")]
        del pp
    assert not leaks


def test_close_then_reuse():
    tensor = model_like(np.random.default_rng(2), (40, 40, 3))
    fast = cpu.FastCPU(threads=3)
    first = run_fast(fast, tensor, "softmax", (200, 180))
    fast.close()
    second = run_fast(fast, tensor, "softmax", (200, 180))
    fast.close()
    for got, want in zip(first, second, strict=True):
        assert_same_bits(got, want)


def test_errors_in_worker_threads_propagate():
    fast = cpu.FastCPU(threads=3)
    calls = []

    def task(i):
        calls.append(i)
        if i == 4:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fast._pool.run(task, 9)
    fast.close()
    assert 4 in calls


# ----------------------------------------------------------------------------- real MediaPipe
@pytest.mark.parametrize(
    ("shape", "activation", "size"),
    [
        ((9, 12, 5), "softmax", (37, 29)),
        ((50, 50, 1), "sigmoid", (256, 144)),
        ((13, 11, 21), "none", (24, 31)),
        ((30, 40, 3), "sigmoid", (17, 13)),
        ((64, 64, 6), "softmax", (320, 240)),
    ],
)
def test_matches_mediapipe(fast, shape, activation, size, parity):
    rng = np.random.default_rng(sum(shape) + size[1])
    tensor = model_like(rng, shape) if shape[0] >= 50 else rng.standard_normal(shape).astype(np.float32) * 8
    expected = mediapipe_postprocess(tensor, activation=activation, output_size=size)
    conf, cat = run_fast(fast, tensor, activation, size)
    from gpu_seg.types import Result

    cmp = compare(Result(conf, cat, "cpu"), expected, tensor, activation, size)
    parity.record(
        "fast cpu vs mediapipe", cmp.confidence_error, cmp.mismatches, cmp.near_tie_mismatches, cmp.pixels
    )


def test_nan_and_inf_match_mediapipe(fast):
    rng = np.random.default_rng(99)
    tensor = (rng.standard_normal((8, 9, 3)) * 3).astype(np.float32)
    tensor[1, 2, 0] = np.nan
    tensor[4, 4, 2] = np.inf
    tensor[6, 1, 0] = -np.inf
    for activation in ("none", "softmax"):
        expected = mediapipe_postprocess(tensor, activation=activation, output_size=(23, 17))
        conf, cat = run_fast(fast, tensor, activation, (23, 17))
        want = expected.confidence_masks
        np.testing.assert_array_equal(np.isnan(conf), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(conf), np.isinf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(conf[finite], want[finite], rtol=1e-5, atol=2e-5)
        np.testing.assert_array_equal(cat, expected.category_mask)


def test_prepare_then_frames_match_the_reference():
    import threading

    tensor = model_like(np.random.default_rng(6), (48, 40, 4))
    before = {t.ident for t in threading.enumerate()}
    with cpu.FastCPU(threads=3) as fast:
        started = [
            t for t in threading.enumerate() if t.ident not in before and t.name.startswith("gpu_seg-cpu")
        ]
        assert len(started) == 2  # the pool's threads exist before the first frame
        fast.prepare(tensor.shape, 250, 190)
        fast.prepare(tensor.shape, 250, 190)  # nothing changed: nothing to do
        for activation in ACTIVATIONS:
            conf, cat = run_fast(fast, tensor, activation, (250, 190))
            assert_same_bits(conf, reference.confidence_masks(tensor, activation, (250, 190)))
            np.testing.assert_array_equal(cat, reference.category_mask(tensor, activation, (250, 190)))


def test_array_subclasses_and_foreign_channel_arrays_compile_nothing_new(fast, tmp_path):
    """np.memmap outputs, a read-only channel array: still the warmed-up specialisations."""
    from gpu_seg.cpu import _category_kernels, _confidence_kernels

    tensor = model_like(np.random.default_rng(7), (20, 16, 3))
    kernels = [_confidence_kernels.resize_float32, _category_kernels.category_rows]
    before = [len(k.signatures) for k in kernels]
    conf = np.memmap(tmp_path / "conf", np.float32, "w+", shape=(2, 30, 40))
    cat = np.memmap(tmp_path / "cat", np.uint8, "w+", shape=(30, 40))
    channels = np.array([2, 0])
    channels.flags.writeable = False
    assert fast.confidence_masks(tensor, "softmax", 40, 30, conf, channels=channels) is conf
    assert fast.category_mask(tensor, "softmax", 40, 30, cat) is cat
    assert [len(k.signatures) for k in kernels] == before
    assert_same_bits(
        np.asarray(conf), reference.confidence_masks(tensor, "softmax", (40, 30), channels=[2, 0])
    )
    np.testing.assert_array_equal(cat, reference.category_mask(tensor, "softmax", (40, 30)))
