"""Bad arguments found by fuzzing the public API: each gets a gpu_seg error naming the argument.

Before their fixes these gave silent garbage (an ``output_size`` of bytes or a set, outputs that
overlap each other or the tensor), raw numpy/Python errors (a ragged list, a huge output size, numpy
arrays as flags, unvalidated policy settings that failed only at the first context loss), a dead
idle thread, a timeout that blamed the driver, or a deadlock (the processor used from inside
``run_gl``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import gpu_seg
from gpu_seg import GpuSegError, InputError, LossBudget, RecoveryPolicy, reference_postprocess
from gpu_seg.resilience import Backoff

BACKENDS = ["cpu", "gl"]


def _tensor(shape=(4, 4, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ragged_list_is_an_input_error(processors, backend):
    ragged = [[[1.0, 2.0]], [[1.0]]]
    with pytest.raises(InputError) as info:
        processors("softmax", backend).process(ragged, (4, 4))
    assert info.value.argument == "tensor"
    with pytest.raises(InputError):
        reference_postprocess(ragged, "softmax", (4, 4))


NOT_PAIRS = [b"ab", bytearray(b"\x05\x06"), {7, 9}, frozenset({7, 9}), {9: "x", 7: "y"}, range(7, 9)]


@pytest.mark.parametrize("size", NOT_PAIRS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_size_must_be_a_pair_not_any_iterable(processors, backend, size):
    with pytest.raises(InputError) as info:
        processors("softmax", backend).process(_tensor(), size)
    assert info.value.argument == "output_size"


@pytest.mark.parametrize("size", [(7, 9), [7, 9], np.array([7, 9]), (np.int64(7), np.uint16(9))])
def test_output_size_pairs_still_work(processors, size):
    assert processors("softmax", "cpu").process(_tensor(), size).category_mask.shape == (9, 7)


def test_an_output_too_large_for_memory_is_an_input_error(processors):
    tensor = _tensor()
    for call in (
        lambda: processors("softmax", "cpu").process(tensor, (65536, 65536)),
        lambda: reference_postprocess(tensor, "softmax", (65536, 65536)),
    ):
        with pytest.raises(InputError, match="GiB") as info:
            call()
        assert info.value.argument == "output_size"


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_that_overlap_each_other_are_refused_untouched(processors, backend):
    confidence = np.full((3, 4, 4), 7.0, np.float32)
    category = confidence.reshape(-1).view(np.uint8)[:16].reshape(4, 4)
    with pytest.raises(InputError, match="overlap") as info:
        processors("softmax", backend).process(
            _tensor(), (4, 4), confidence_out=confidence, category_out=category
        )
    assert info.value.argument == "category_out"
    assert (confidence == 7.0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_output_that_overlaps_the_tensor_is_refused_untouched(processors, backend):
    tensor = _tensor((4, 4, 4))
    saved = tensor.copy()
    with pytest.raises(InputError, match="overlap") as info:
        processors("softmax", backend).process(tensor, (4, 4), confidence_out=tensor.reshape(4, 4, 4))
    assert info.value.argument == "confidence_out"
    category = tensor.reshape(-1).view(np.uint8)[:16].reshape(4, 4)
    with pytest.raises(InputError, match="overlap") as info:
        processors("softmax", backend).process(tensor, (4, 4), category_out=category)
    assert info.value.argument == "category_out"
    np.testing.assert_array_equal(tensor, saved)


def test_outputs_side_by_side_in_one_buffer_are_fine(processors):
    tensor = _tensor((4, 4, 3))
    buffer = np.empty(3 * 16 * 4 + 16, np.uint8)
    confidence = buffer[: 3 * 16 * 4].view(np.float32).reshape(3, 4, 4)
    category = buffer[3 * 16 * 4 :].reshape(4, 4)
    pp = processors("softmax", "cpu")
    result = pp.process(tensor, (4, 4), confidence_out=confidence, category_out=category)
    expected = reference_postprocess(tensor, "softmax", (4, 4))
    np.testing.assert_array_equal(result.category_mask, expected.category_mask)
    np.testing.assert_array_equal(result.confidence_masks, expected.confidence_masks)


@pytest.mark.parametrize("seconds", [math.inf, 1e300, math.nan, True])
def test_idle_release_after_must_be_a_finite_time(seconds):
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(backend="cpu", idle_release_after=seconds)
    assert info.value.argument == "idle_release_after"


@pytest.mark.parametrize("seconds", ["x", math.inf, -1, 0, math.nan, True])
@pytest.mark.parametrize("backend", ["cpu", "auto", "gl"])
def test_gl_timeout_must_be_none_or_a_positive_finite_time(backend, seconds):
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(backend=backend, gl_timeout=seconds)
    assert info.value.argument == "gl_timeout"


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("output_confidence_masks", np.array([1, 1])),
        ("output_category_mask", np.array([1, 0])),
        ("time_gpu", np.array([1, 0])),
        ("idle_release_context", np.array([1, 0])),
        ("context", np.zeros(2)),
    ],
)
def test_arrays_are_not_flags_or_contexts(argument, value):
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(backend="cpu", **{argument: value})
    assert info.value.argument == argument


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: LossBudget(capacity=-1), "capacity"),
        (lambda: LossBudget(capacity="3"), "capacity"),
        (lambda: LossBudget(capacity=1.5), "capacity"),
        (lambda: LossBudget(forgive_after=0), "forgive_after"),
        (lambda: LossBudget(forgive_after="x"), "forgive_after"),
        (lambda: LossBudget(forgive_after=math.nan), "forgive_after"),
        (lambda: Backoff(base=-1), "base"),
        (lambda: Backoff(factor="x"), "factor"),
        (lambda: Backoff(cap=math.nan), "cap"),
        (lambda: Backoff(cap=math.inf), "cap"),  # a long burst of losses would sleep for ever
        (lambda: Backoff(cap=1e12), "cap"),  # longer than any wait
        (lambda: Backoff(factor=math.inf), "factor"),
        (lambda: Backoff(base=10**400), "base"),
        (lambda: LossBudget(capacity=10**400), "capacity"),
        (lambda: RecoveryPolicy(reprobe_interval=-1), "reprobe_interval"),
        (lambda: RecoveryPolicy(reprobe_interval=math.nan), "reprobe_interval"),
        (lambda: RecoveryPolicy(budget="x"), "budget"),
        (lambda: RecoveryPolicy(backoff=5), "backoff"),
        (lambda: RecoveryPolicy(clock="x"), "clock"),
        (lambda: RecoveryPolicy(quick_succession="x"), "quick_succession"),
        (lambda: RecoveryPolicy(quick_succession=-1), "quick_succession"),
    ],
)
def test_recovery_settings_are_checked_when_made(make, argument):
    with pytest.raises(InputError) as info:
        make()
    assert info.value.argument == argument
    assert isinstance(info.value, ValueError)  # as before, for callers catching ValueError


@pytest.mark.parametrize(
    "make",
    [
        lambda: LossBudget(capacity=3.0),
        lambda: LossBudget(capacity=math.inf),  # every loss rebuilt
        lambda: LossBudget(forgive_after=math.inf),  # never forgiven
        lambda: LossBudget(capacity=0),
        lambda: Backoff(base=0),
        lambda: RecoveryPolicy(reprobe_interval=math.inf),  # never back to the GPU
        lambda: RecoveryPolicy(reprobe_interval=0, quick_succession=0),
    ],
)
def test_recovery_settings_that_make_sense_are_taken(make):
    make()


def test_an_endless_loss_budget_rebuilds_every_loss(new_processor):
    from gpu_seg import testing

    pp = new_processor(backend="gl", policy=RecoveryPolicy(budget=LossBudget(capacity=math.inf)))
    tensor = _tensor()
    for _ in range(5):
        testing.lose_context(pp)
        assert pp.process(tensor, (4, 4)).backend == "gl"
    assert pp.stats["rebuilds"] >= 5


def test_confidence_channels_may_be_an_iterator(processors):
    tensor = _tensor((4, 4, 3))
    with gpu_seg.SegmentationPostprocessor("softmax", backend="cpu", confidence_channels=iter([2, 0])) as pp:
        for _ in range(2):
            masks = pp.process(tensor, (5, 5)).confidence_masks
            expected = reference_postprocess(tensor, "softmax", (5, 5), confidence_channels=[2, 0])
            np.testing.assert_array_equal(masks, expected.confidence_masks)


@pytest.mark.parametrize(
    "call",
    [
        lambda pp: pp.stats,
        lambda pp: pp.process(np.zeros((2, 2, 1), np.float32)),
        lambda pp: pp.trim(),
        lambda pp: pp.run_gl(lambda ctx: None),
        lambda pp: pp.close(),
    ],
    ids=["stats", "process", "trim", "run_gl", "close"],
)
def test_the_processor_used_inside_run_gl_raises_at_once(call):
    with gpu_seg.SegmentationPostprocessor(backend="gl", gl_timeout=5) as pp:
        pp.process(np.zeros((2, 2, 1), np.float32))
        started = time.monotonic()
        with pytest.raises(InputError, match="inside run_gl") as info:
            pp.run_gl(lambda ctx: call(pp))
        assert time.monotonic() - started < 2.5
        assert info.value.argument == "function"
        assert pp.stats["context_losses"] == 0
        assert pp.process(np.zeros((2, 2, 1), np.float32)).backend == "gl"  # still fine


def test_lent_textures_read_inside_run_gl_raise_at_once():
    tensor = _tensor((4, 4, 2))
    with gpu_seg.SegmentationPostprocessor(backend="gl", gl_timeout=5) as pp:
        masks = pp.process_resident(tensor, (4, 4))
        started = time.monotonic()
        with pytest.raises(GpuSegError, match="inside run_gl"):
            pp.run_gl(lambda ctx: masks.read_category())
        assert time.monotonic() - started < 2.5
        assert pp.stats["context_losses"] == 0


def _gl_limit(pp) -> int:
    pp.process(np.zeros((2, 2, 1), np.float32))
    return pp._supervisor.max_texture_size


def _matches_reference(result, tensor, activation, size, **options):
    expected = reference_postprocess(tensor, activation, size, **options)
    for got, want in (
        (result.confidence_masks, expected.confidence_masks),
        (result.category_mask, expected.category_mask),
    ):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_tensors_beyond_the_gl_texture_limit_on_gl():
    """Too tall, or too wide for the softmax statistics (a texture at tensor resolution): InputError
    before any GL call. Wide tensors whose textures all use the wrapped layout work."""
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:
        limit = _gl_limit(pp)
        for shape in [(1, limit + 1, 1), (limit + 1, 1, 1)]:
            with pytest.raises(InputError, match="texture limit") as info:
                pp.process(np.zeros(shape, np.float32), (3, 3))
            assert info.value.argument == "tensor"
        assert pp.stats["context_losses"] == 0
        assert pp.process(np.zeros((1, limit, 1), np.float32), (3, 3)).backend == "gl"  # at the limit
    wide = np.random.default_rng(1).standard_normal((2, limit + 1, 3)).astype(np.float32)
    for passes in ("fragment", "compute"):
        with gpu_seg.SegmentationPostprocessor("sigmoid", backend="gl", gl_passes=passes) as pp:
            _matches_reference(pp.process(wide, (41, 3)), wide, "sigmoid", (41, 3))
        options = {"output_confidence_masks": False}
        with gpu_seg.SegmentationPostprocessor("softmax", backend="gl", gl_passes=passes, **options) as pp:
            _matches_reference(pp.process(wide, (41, 3)), wide, "softmax", (41, 3), **options)


def test_tensors_beyond_the_gl_texture_limit_go_to_the_cpu_on_auto():
    with gpu_seg.SegmentationPostprocessor("softmax", backend="auto", software_renderer="gl") as pp:
        limit = _gl_limit(pp)
        for shape in [(2, limit + 1, 2), (limit + 1, 2, 2)]:
            tensor = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
            result = pp.process(tensor, (5, 4))
            assert result.backend == "cpu"
            _matches_reference(result, tensor, "softmax", (5, 4))
        assert pp.process(np.zeros((2, 2, 2), np.float32), (limit + 1, 2)).backend == "cpu"  # output too
        assert pp.stats["context_losses"] == 0 and not pp.stats["fallback_active"]
        assert pp.process(np.zeros((2, 2, 2), np.float32)).backend == "gl"  # GL for the others
        with pytest.raises(InputError) as info:  # resident frames have no CPU answer
            pp.process_resident(np.zeros((1, limit + 1, 2), np.float32), (3, 3))
        assert info.value.argument == "tensor"


@pytest.mark.parametrize("index", ["0", 0.0, True, -1, 1.5])
def test_device_index_must_be_a_whole_number_from_zero(index):
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(backend="auto", device_index=index)
    assert info.value.argument == "device_index"


def test_run_gl_needs_a_callable(processors):
    with pytest.raises(InputError) as info:
        processors("softmax", "gl").run_gl(5)
    assert info.value.argument == "function"


def test_on_event_must_be_callable():
    with pytest.raises(InputError) as info:
        gpu_seg.SegmentationPostprocessor(backend="cpu", on_event=5)
    assert info.value.argument == "on_event"
    with gpu_seg.SegmentationPostprocessor(backend="cpu") as pp:
        with pytest.raises(InputError) as info:
            pp.on_event = "print"
        assert info.value.argument == "on_event"
        pp.on_event = print  # and None: fine
        pp.on_event = None


def test_outputs_the_caller_gives_are_not_counted_against_memory(tmp_path):
    """Preallocated outputs (here a memory-mapped file larger than the machine's memory, sparse) are
    the caller's memory: only masks gpu_seg would allocate are checked against it."""
    from gpu_seg.inputs import physical_memory

    memory = physical_memory()
    if memory is None:
        pytest.skip("the system does not report its memory")
    channels = 1
    while (side := int((memory * 1.1 / (4 * channels)) ** 0.5) + 1) > 65536:  # float32 masks > memory
        channels *= 2
    tensor = np.zeros((2, 2, channels), np.float32)
    confidence = np.memmap(tmp_path / "masks", np.float32, "w+", shape=(channels, side, side))
    with gpu_seg.SegmentationPostprocessor("none", backend="cpu", output_category_mask=False) as pp:
        _, destination, _ = pp._prepare(tensor, (side, side), confidence, None)  # validation only
        assert destination is confidence
        with pytest.raises(InputError, match="GiB") as info:
            pp._prepare(tensor, (side, side), None, None)
        assert info.value.argument == "output_size"


@pytest.mark.parametrize("context", [np.zeros(2), np.array("current"), 5])
def test_attach_checks_its_context(processors, context):
    with pytest.raises(InputError) as info:
        processors("softmax", "gl").attach(context)
    assert info.value.argument == "context"


@pytest.mark.parametrize("backend", ["cpu", "gl"])
def test_a_negative_confidence_channel_is_named_as_such(backend):
    with pytest.raises(gpu_seg.InputError, match="channel -1 is negative") as caught:
        gpu_seg.SegmentationPostprocessor("softmax", backend=backend, confidence_channels=[-1])
    assert caught.value.argument == "confidence_channels"


@pytest.mark.parametrize("value", ["garbage", "-1", "1.5"])
def test_a_bad_egl_device_variable_is_an_error_naming_it(monkeypatch, value):
    """A bad ``GPU_SEG_EGL_DEVICE`` made ``backend="auto"`` compute on the CPU without a word (a
    configuration error taken for "no GPU"); "-1" was reported as ``device_index``."""
    monkeypatch.setenv("GPU_SEG_EGL_DEVICE", value)
    with pytest.raises(gpu_seg.InputError, match="GPU_SEG_EGL_DEVICE") as caught:
        gpu_seg.SegmentationPostprocessor("softmax")
    assert caught.value.argument == "device_index"
