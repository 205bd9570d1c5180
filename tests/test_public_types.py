"""The public API's type hints say what the values are (the package ships ``py.typed``, so type
checkers hold users' code to them): ``SegmentationPostprocessor.stats`` against
:class:`gpu_seg.ProcessorStats`, key by key and value by value, in the states a processor goes
through."""

from __future__ import annotations

import types
import typing

import numpy as np
import pytest

import gpu_seg
from gpu_seg.gl.session import ContextInfo


def _matches(value: object, hint: object) -> bool:
    """Whether ``value`` is of ``hint`` (int, bool, float, str, dict[...] and their unions with
    None). Exact types: a bool is not an int here, nor a numpy integer an int (``json.dumps`` and
    users' ``isinstance`` checks would see the difference)."""
    if isinstance(hint, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(hint))
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    return type(value) is origin


def _check(stats: object) -> None:
    hints = typing.get_type_hints(gpu_seg.ProcessorStats)
    assert type(stats) is dict
    assert set(stats) == set(hints), f"keys differ: {set(stats) ^ set(hints)}"
    wrong = {
        key: (type(value).__name__, hints[key])
        for key, value in stats.items()
        if not _matches(value, hints[key])
    }
    assert not wrong, f"values not of their hinted types: {wrong}"


def test_stats_of_a_fresh_processor_match_their_hints(new_processor):
    _check(new_processor("softmax", backend="gl").stats)


@pytest.mark.parametrize("backend", ["gl", "cpu", "auto"])
def test_stats_after_frames_match_their_hints(new_processor, backend):
    options = {"software_renderer": "fastest"} if backend == "auto" else {}
    pp = new_processor("softmax", backend=backend, time_gpu=backend == "gl", **options)
    tensor = np.random.default_rng(3).standard_normal((8, 8, 3)).astype(np.float32)
    for _ in range(3):
        pp.process(tensor, (16, 12))
    stats = pp.stats
    _check(stats)
    if backend == "gl":
        assert stats["gl_frames"] == 3 and stats["last_gpu_ms"] is not None
        assert stats["generation"] >= 1 and stats["live_gl_objects"] > 0
    if backend == "cpu":
        assert stats["cpu_frames"] == 3 and stats["cpu_path"] is not None


def test_stats_after_a_resident_frame_a_trim_and_close_match_their_hints(new_processor):
    pp = new_processor("sigmoid", backend="gl")
    tensor = np.random.default_rng(4).standard_normal((8, 8, 1)).astype(np.float32)
    buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
    pp.process_resident(gpu_seg.GLTensor(buffer, tensor.shape), (16, 16)).release()
    stats = pp.stats
    _check(stats)
    assert stats["last_resident_passes"] in ("compute", "fragment", "mixed", "none")
    pp.run_gl(lambda ctx: buffer.release())
    pp.trim(release_context=True)
    _check(pp.stats)
    pp.close()
    _check(pp.stats)


def test_context_info_is_what_its_hint_says(new_processor):
    pp = new_processor("none", backend="gl")
    assert type(pp).context_info.fget.__annotations__["return"] == "ContextInfo | None"
    pp.process(np.zeros((2, 2, 1), np.float32))
    assert isinstance(pp.context_info, ContextInfo)
    pp.close()
    assert pp.context_info is None


def test_the_errors_process_may_raise_are_exported():
    """``process()`` with ``backend="gl"`` raises GLError where a GL call fails on a healthy
    context; it lived in ``gpu_seg.gl.session`` only, out of the documented hierarchy."""
    from gpu_seg.gl import session

    for name in gpu_seg.errors.__all__:
        error = getattr(gpu_seg, name)
        assert error is getattr(gpu_seg.errors, name) and issubclass(error, gpu_seg.GpuSegError)
    assert session.GLError is gpu_seg.GLError
    assert "GLError" in (gpu_seg.SegmentationPostprocessor.process.__doc__ or "")
