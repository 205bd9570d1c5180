"""GL state set by code other than gpu_seg's never reaches its passes (``gpu_seg.gl.state``).

An application's state in an attached context, and state a ``run_gl`` function leaves in an owned
one: blending, face culling, a logic op, rasterizer discard, polygon mode, pixel-store parameters,
bound pixel buffers, a clamped float read. Before, each made masks silently wrong, made every frame
raise, or (``GL_PACK_SKIP_PIXELS``) made a readback write past its array: heap corruption, hence a
subprocess. Every frame is compared with the numpy reference.
"""

from __future__ import annotations

import pytest

from .subprocesses import run_script

_SCRIPT = r"""
import ctypes, json, sys
import numpy as np
import moderngl
import gpu_seg
from gpu_seg.gl import rawgl

u = ctypes.c_uint
def fn(name, *args):
    return ctypes.CFUNCTYPE(None, *args)(rawgl.resolve(name))
enable, store = fn("glEnable", u), fn("glPixelStorei", u, ctypes.c_int)
STATES = {
    "blend": lambda ctx: (ctx.enable(moderngl.BLEND), fn("glBlendFunc", u, u)(0x0302, 0x0303)),  # alpha
    "cull cw": lambda ctx: (ctx.enable(moderngl.CULL_FACE), setattr(ctx, "front_face", "cw")),
    "logic op xor": lambda ctx: (enable(0x0BF2), fn("glLogicOp", u)(0x1506)),
    "rasterizer discard": lambda ctx: enable(0x8C89),
    "polygon mode line": lambda ctx: fn("glPolygonMode", u, u)(0x0408, 0x1B01),
    "unpack row length": lambda ctx: store(0x0CF2, 7),
    "unpack skip rows": lambda ctx: store(0x0CF3, 2),
    "pack row length": lambda ctx: store(0x0D02, 7),
    "pack skip pixels": lambda ctx: store(0x0D04, 3),
    "pack buffer bound": lambda ctx: fn("glBindBuffer", u, u)(0x88EB, ctx.buffer(reserve=64).glo),
    "unpack buffer bound": lambda ctx: fn("glBindBuffer", u, u)(0x88EC, ctx.buffer(reserve=64).glo),
    "clamped float reads": lambda ctx: fn("glClampColor", u, u)(0x891C, 1),
    "color mask": lambda ctx: fn("glColorMask", *[ctypes.c_ubyte] * 4)(1, 0, 1, 0),
}
SIZE = (37, 29)
rng = np.random.default_rng(3)


def frame_ok(pp, activation):
    tensor = (rng.standard_normal((16, 20, 5)) * 4).astype(np.float32)
    try:
        got = pp.process(tensor, SIZE)
    except gpu_seg.GpuSegError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    want = gpu_seg.reference_postprocess(tensor, activation, SIZE)
    same = np.allclose(got.confidence_masks, want.confidence_masks, rtol=2e-6, atol=2e-6) and np.array_equal(
        got.category_mask, want.category_mask)
    return "ok" if same and got.backend == "gl" else f"wrong masks ({got.backend})"


report = {}
mode = sys.argv[1]
for name, set_state in STATES.items():
    for activation in ("softmax", "none"):  # none: raw logits, outside [0, 1]
        if mode == "attached":
            app = moderngl.create_context(standalone=True, backend="egl")
            with gpu_seg.SegmentationPostprocessor(activation, backend="gl", context=app) as pp:
                set_state(app)
                report[f"{name} / {activation}"] = [frame_ok(pp, activation) for _ in range(2)]
            app.release()
        else:
            options = {"readback": "mapped", "gl_passes": "compute"} if mode == "owned compute" else {}
            options["software_renderer"] = "gl"
            with gpu_seg.SegmentationPostprocessor(activation, backend="gl", **options) as pp:
                frame_ok(pp, activation)
                pp.run_gl(set_state)
                report[f"{name} / {activation}"] = [frame_ok(pp, activation) for _ in range(2)]
print(json.dumps(report))
"""


@pytest.mark.parametrize("mode", ["attached", "owned", "owned compute"])
def test_state_left_by_other_code_never_reaches_the_passes(mode):
    report = run_script(_SCRIPT, mode, timeout=300)
    wrong = {case: outcomes for case, outcomes in report.items() if outcomes != ["ok", "ok"]}
    assert not wrong, wrong
