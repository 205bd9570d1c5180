"""backend="auto" on a software rasteriser: GL or the fast CPU path per configuration; the CPU backend."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_seg
from gpu_seg.inputs import make_frame
from gpu_seg.speed_choice import Route, SpeedChoice, frame_key, is_software_renderer

SIZE = (61, 47)


def _tensor(seed: int, shape=(20, 16, 4)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)


def _assert_exact(result, tensor, size=SIZE):
    want = gpu_seg.reference_postprocess(tensor, "softmax", size)
    np.testing.assert_allclose(result.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


@pytest.mark.parametrize(
    ("renderer", "software"),
    [
        ("llvmpipe (LLVM 15.0.6, 256 bits)", True),
        ("softpipe", True),
        ("Google SwiftShader", True),
        ("NVIDIA H100 80GB HBM3/PCIe/SSE2", False),
        ("AMD Radeon Pro W6800 (radeonsi, navi21, LLVM 15.0.7, DRM 3.49)", False),
    ],
)
def test_software_renderers_are_recognised(renderer, software):
    assert is_software_renderer(renderer) is software


def test_each_configuration_is_measured_once_then_takes_the_faster():
    choice = SpeedChoice()
    frame = make_frame(_tensor(1), "softmax", SIZE, confidence=True, category=True)
    key = frame_key(frame)
    assert choice.route(key) is Route.GL  # first frame: both paths warm up
    assert choice.route(key) is Route.TIME_GL
    choice.record(key, Route.TIME_GL, 0.010)
    assert choice.route(key) is Route.TIME_CPU
    choice.record(key, Route.TIME_CPU, 0.004)
    assert [choice.route(key) for _ in range(3)] == [Route.CPU] * 3
    assert choice.summary() == {"gl": 0, "cpu": 1, "undecided": 0}
    other = frame_key(make_frame(_tensor(1), "softmax", (60, 47), confidence=True, category=True))
    assert choice.route(other) is Route.GL  # another output size is another configuration


def test_the_choice_remembers_a_bounded_number_of_configurations():
    choice = SpeedChoice(capacity=4)
    for width in range(8, 20):
        choice.route(("shape", width))
    assert sum(choice.summary().values()) == 4


def test_auto_on_llvmpipe_runs_the_faster_path_and_stays_exact():
    with gpu_seg.SegmentationPostprocessor("softmax") as pp:
        info = pp.context_info
        if info is None or not is_software_renderer(info.renderer):
            pytest.skip(f"the renderer here is a hardware GPU ({info and info.renderer}): GL always")
        tensor = _tensor(2)
        backends = []
        for _ in range(6):
            result = pp.process(tensor, SIZE)
            _assert_exact(result, tensor)
            backends.append(result.backend)
        assert backends[:3] == ["gl", "gl", "cpu"]  # warm-up, timed GL, timed CPU
        decided = backends[3]
        assert backends[3:] == [decided] * 3
        summary = pp.stats["speed_choice"]
        assert summary[decided] == 1 and summary["undecided"] == 0
        assert pp.stats["chosen_cpu_frames"] == 1 + 3 * (decided == "cpu")


@pytest.mark.parametrize("readback", ["auto", "direct", "mapped"])
def test_submitted_frames_count_once_in_the_choice(readback):
    """Frames collected from submit() take the same turns as process() frames: the untimed warm-up
    first, then one timed GL and one timed CPU frame (not the cold first frame timed)."""
    with gpu_seg.SegmentationPostprocessor("softmax", readback=readback) as pp:
        info = pp.context_info
        if info is None or not is_software_renderer(info.renderer):
            pytest.skip(f"the renderer here is a hardware GPU ({info and info.renderer}): GL always")
        tensor = _tensor(3)
        backends, undecided = [], []
        for _ in range(4):
            result = pp.submit(tensor, SIZE).result()
            _assert_exact(result, tensor)
            backends.append(result.backend)
            undecided.append(pp.stats["speed_choice"]["undecided"])
        assert backends[:3] == ["gl", "gl", "cpu"]  # warm-up, timed GL, timed CPU
        assert undecided == [1, 1, 0, 0]


def test_software_renderer_gl_keeps_every_frame_on_gl():
    with gpu_seg.SegmentationPostprocessor("softmax", software_renderer="gl") as pp:
        tensor = _tensor(3)
        assert {pp.process(tensor, SIZE).backend for _ in range(5)} == {"gl"}
        assert pp.stats["speed_choice"] is None


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_cpu_backend_uses_the_fast_path_bit_for_bit(dtype):
    tensor = _tensor(4, (33, 29, 6))
    with gpu_seg.SegmentationPostprocessor(
        "softmax", backend="cpu", confidence_dtype=dtype, confidence_channels=[5, 0]
    ) as pp:
        result = pp.process(tensor, (70, 50))
        assert pp.stats["cpu_path"] == "fast" and pp.stats["cpu_threads"] >= 1
    want = gpu_seg.reference_postprocess(
        tensor, "softmax", (70, 50), confidence_dtype=dtype, confidence_channels=[5, 0]
    )
    np.testing.assert_array_equal(result.confidence_masks, want.confidence_masks)
    np.testing.assert_array_equal(result.category_mask, want.category_mask)


def test_bad_software_renderer_and_cpu_threads_name_themselves():
    with pytest.raises(gpu_seg.InputError, match="software_renderer"):
        gpu_seg.SegmentationPostprocessor(software_renderer="fast")
    with pytest.raises(gpu_seg.InputError, match="cpu_threads"):
        gpu_seg.SegmentationPostprocessor(backend="cpu", cpu_threads=0)


_COLD_CPU = r"""
import time
import numpy as np
import gpu_seg
from gpu_seg.cpu import _warm

compile_like = _warm.exercise_every_kernel

def slow_warm_up():  # a first run after an install: numba compiles for seconds
    time.sleep(2.0)
    compile_like()

_warm.exercise_every_kernel = slow_warm_up
tensor = np.random.default_rng(3).standard_normal((64, 64, 3)).astype(np.float32)
with gpu_seg.SegmentationPostprocessor("softmax", False, True) as pp:  # auto on llvmpipe
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pp.process(tensor, (320, 240))
        (entry,) = pp._speed._entries.values()
        if entry.decided is not None:
            break
        time.sleep(0.02)
    print(entry.cpu_seconds, entry.gl_seconds)
"""


def test_the_cpu_is_measured_only_once_its_kernels_are_ready():
    """The time of the speed choice's CPU frame must not include the wait for the fast path's
    warm-up (seconds on a first run after an install: numba compiles). Timed with it, GL won for
    good where the CPU is several times faster (deeplab category on llvmpipe: 18 ms on GL against
    4 ms). In a fresh interpreter, with the warm-up slowed to 2 s."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _COLD_CPU], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu_seconds, _ = (float(v) for v in proc.stdout.split())
    assert cpu_seconds < 1.0, f"the timed CPU frame waited for the warm-up ({cpu_seconds:.2f} s)"
