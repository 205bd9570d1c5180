"""GPU time of each pass of a frame (a diagnostic: where the GPU time of a frame goes).

Every full-screen pass (``GLPipeline._draw``), every compute dispatch (``ComputeShader.run`` of
:mod:`gpu_seg.gl.compute`), the upload and the start of the readback are run alone: ``glFinish``
before and after, one ``GL_TIME_ELAPSED`` query around the call, so a pass's figure is its own GPU
time without the gaps of the host issuing commands. Medians over ``--frames`` frames of
``process()`` (mapped readback) per preset, both outputs, once per form of the passes
(``--passes``: ``gl_passes="fragment"`` and ``"compute"``), and with ``--resident`` of
``process_resident`` frames too (GL buffer in, lent textures out). A run that fails is reported with its
error; the others go on. Prints JSON.

    python benchmarks/gpu_passes.py --presets multiclass,deeplab --frames 10 --json passes.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import sys

import moderngl
import numpy as np

import gpu_seg
from gpu_seg.gl import pipeline as pipeline_module
from gpu_seg.gl import programs as programs_module
from gpu_seg.gl import readback as readback_module
from gpu_seg.gl import upload as upload_module
from gpu_seg.tools.bench.cases import PRESETS, model_like_tensor
from gpu_seg.types import Result

_samples: dict[str, list[float]] = collections.defaultdict(list)


@contextlib.contextmanager
def _gpu_time(ctx, name: str):
    """GPU time of what runs inside, alone (finished before and after)."""
    ctx.finish()
    query = ctx.query(time=True)  # moderngl cannot delete queries: a diagnostic may leak a few
    with query:
        yield
    ctx.finish()
    _samples[name].append(query.elapsed / 1e6)


def install() -> None:
    """Wrap the passes, the upload and the start of the readback in timers."""
    pipeline_cls = pipeline_module.GLPipeline
    draw = pipeline_cls._draw

    def timed_draw(self, definition, fbo, textures, viewport=None, **uniforms):
        width, height = viewport or fbo.size
        name = f"{definition.name} {width}x{height} ({len(fbo.color_attachments)} targets)"
        with _gpu_time(self.ctx, name):
            return draw(self, definition, fbo, textures, viewport, **uniforms)

    pipeline_cls._draw = timed_draw
    for cls in (upload_module.DirectUpload, upload_module.MappedUpload):
        _wrap_upload(cls)
    start = readback_module.MappedReadback.start

    def timed_start(self, readout, *args, **kwargs):
        with _gpu_time(self._ctx, f"readback start ({len(readout.confidence)} planes)"):
            return start(self, readout, *args, **kwargs)

    readback_module.MappedReadback.start = timed_start
    _wrap_compute()


_compute_names: dict[int, str] = {}
#: ``ComputeShader.run`` before :func:`install` wraps it (the probe times its dispatch itself).
_UNTIMED_RUN = moderngl.ComputeShader.run


def _wrap_compute() -> None:
    """Time every compute dispatch, named after its program (remembered when the cache hands it out)."""
    cache_get = programs_module.ProgramCache.get

    def named_get(self, definition):
        program = cache_get(self, definition)
        if definition.compute:
            _compute_names[program.glo] = definition.name
        return program

    programs_module.ProgramCache.get = named_get
    run = moderngl.ComputeShader.run

    def timed_run(self, group_x=1, group_y=1, group_z=1):
        name = f"{_compute_names.get(self.glo, 'compute')}.comp {group_x}x{group_y}x{group_z} groups"
        with _gpu_time(self.ctx, name):
            return run(self, group_x, group_y, group_z)

    moderngl.ComputeShader.run = timed_run


def _wrap_upload(cls) -> None:
    upload = cls.upload

    def timed_upload(self, slot, tensor):
        with _gpu_time(slot.texture.ctx, f"upload {cls.__name__}"):
            return upload(self, slot, tensor)

    cls.upload = timed_upload


def measure(preset_name: str, frames: int, gl_passes: str = "fragment", resident: bool = False) -> dict:
    """Per-pass GPU times of ``process()`` frames, or with ``resident`` of ``process_resident``
    frames from a GL buffer holding the tensor (HWC) into the lent textures (texture -> texture)."""
    preset = PRESETS[preset_name]
    tensor = model_like_tensor(preset.tensor_shape, np.random.default_rng(7))
    size = preset.output_size
    _samples.clear()
    with gpu_seg.SegmentationPostprocessor(
        preset.activation, backend="gl", readback="mapped", gl_passes=gl_passes
    ) as pp:
        if resident:
            buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
            source = gpu_seg.GLTensor(buffer, tensor.shape)

            def frame():
                return pp.process_resident(source, size)

        else:

            def frame():
                return pp.process(tensor, size)

        for _ in range(2):
            frame()
        _samples.clear()
        for _ in range(frames):
            frame()
        if resident:
            masks = pp.process_resident(source, size)
            result = Result(masks.read_confidence(), masks.read_category(), "gl")
        else:
            result = frame()
        renderer = pp.context_info.renderer
        if resident:
            pp.run_gl(lambda ctx: buffer.release())
    want = gpu_seg.reference_postprocess(tensor, preset.activation, size)
    passes = {name: statistics.median(values) for name, values in _samples.items()}
    return {
        "preset": preset_name,
        "gl_passes": gl_passes,
        "frames": "process_resident (GL buffer -> textures)" if resident else "process",
        "renderer": renderer,
        "passes_ms": dict(sorted(passes.items(), key=lambda item: -item[1])),
        "sum_ms": sum(passes.values()),
        "category_mismatches": int((result.category_mask != want.category_mask).sum()),
        "max_conf_diff": float(np.nanmax(np.abs(result.confidence_masks - want.confidence_masks))),
    }


_PROBE_VERTEX = """#version 400 core
void main() {
    vec2 corner = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}"""
_ROWS_LIKE = """uniform sampler2D u; uniform sampler2D lut; out vec4 o;
void main() {
    vec4 t = texelFetch(lut, ivec2(gl_FragCoord.x, 0), 0);
    int y = int(gl_FragCoord.y) % 257;
    int n = int(gl_FragCoord.y) / 257;
    vec4 a = texelFetch(u, ivec2(int(t.x) * 6 + n, y), 0);
    vec4 b = texelFetch(u, ivec2(int(t.y) * 6 + n, y), 0);
    PRECISE vec4 h = a * t.z + b * t.w;
    o = h;
}"""
_PROBES = {
    "constant": "out vec4 o; void main() { o = vec4(0.25); }",
    "one fetch": "uniform sampler2D u; out vec4 o;"
    " void main() { o = texelFetch(u, ivec2(gl_FragCoord.xy) % 257, 0) * 2.0; }",
    "rows-like, precise": "#define PRECISE precise\n" + _ROWS_LIKE,
    "rows-like, not precise": "#define PRECISE\n" + _ROWS_LIKE,
}


def probes(size: tuple[int, int] = (1920, 1542), repeats: int = 8) -> dict[str, float]:
    """GPU time of trivial full-screen passes into an RGBA32F target of ``size``: what a pass of
    that size costs on this GPU and driver whatever its maths."""
    with gpu_seg.SegmentationPostprocessor("softmax", backend="gl") as pp:

        def run(ctx) -> dict[str, float]:
            target = ctx.texture(size, 4, dtype="f4")
            fbo = ctx.framebuffer([target])
            source = ctx.texture((1542, 257), 4, dtype="f4")
            taps = np.zeros((size[0], 4), np.float32)
            taps[:, 0] = np.minimum(np.arange(size[0]) * 257 // size[0], 256)
            taps[:, 1] = np.minimum(taps[:, 0] + 1, 256)
            taps[:, 2], taps[:, 3] = 0.25, 0.75
            lut = ctx.texture((size[0], 1), 4, taps.tobytes(), dtype="f4")
            out: dict[str, float] = {}
            try:
                for name, body in _PROBES.items():
                    program = ctx.program(
                        vertex_shader=_PROBE_VERTEX, fragment_shader="#version 400 core\n" + body
                    )
                    vao = ctx.vertex_array(program, [])
                    source.use(0)
                    lut.use(1)
                    for uniform, unit in (("u", 0), ("lut", 1)):
                        if uniform in program:
                            program[uniform].value = unit
                    fbo.use()
                    times = []
                    for _ in range(repeats):
                        ctx.finish()
                        query = ctx.query(time=True)
                        with query:
                            vao.render(vertices=3)
                        ctx.finish()
                        times.append(query.elapsed / 1e6)
                    out[f"{name} {size[0]}x{size[1]} RGBA32F"] = statistics.median(times)
                    corner = np.frombuffer(fbo.read(viewport=(0, 0, 2, 2), components=4, dtype="f4"), "f4")
                    out[f"{name}: drawn"] = bool(np.all(corner == 0.25)) if name == "constant" else True
                    vao.release()
                    program.release()
            finally:
                ctx.detect_framebuffer(0).use()
                fbo.release()
                target.release()
                source.release()
                lut.release()
            try:
                out.update(_compute_probe(ctx, size, repeats))
            except Exception as exc:  # no compute shaders: the fragment probes still count
                out["compute constant: error"] = f"{type(exc).__name__}: {exc}"
            return out

        return pp.run_gl(run)


_COMPUTE_CONSTANT = """#version 430 core
layout(local_size_x = 128) in;
layout(std430, binding = 0) writeonly buffer Out { vec4 values[]; };
uniform int u_count;
void main() {
    int i = int(gl_GlobalInvocationID.x);
    if (i < u_count) values[i] = vec4(0.25);
}"""


def _compute_probe(ctx, size: tuple[int, int], repeats: int) -> dict[str, object]:
    """GPU time of a compute dispatch writing a constant vec4 per pixel into a storage buffer of
    the probes' target size (the compute counterpart of the "constant" probe)."""
    count = size[0] * size[1]
    shader = ctx.compute_shader(_COMPUTE_CONSTANT)
    buffer = ctx.buffer(reserve=count * 16)
    try:
        shader["u_count"].value = count
        buffer.bind_to_storage_buffer(0)
        times = []
        for _ in range(repeats):
            ctx.finish()
            query = ctx.query(time=True)
            with query:
                _UNTIMED_RUN(shader, -(-count // 128))
            ctx.finish()
            times.append(query.elapsed / 1e6)
        ctx.memory_barrier()
        head = np.frombuffer(buffer.read(size=16), np.float32)
        return {
            f"compute constant {size[0]}x{size[1]} vec4 buffer": statistics.median(times),
            "compute constant: written": bool(np.all(head == 0.25)),
        }
    finally:
        buffer.release()
        shader.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="selfie,multiclass,deeplab")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--passes", default="fragment,compute", help="gl_passes values to measure")
    parser.add_argument(
        "--resident", action="store_true", help="also process_resident frames (GL buffer -> textures)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    install()
    results: list[dict] = []
    try:
        results.append({"probes_ms": probes()})
    except Exception as exc:  # a failure in one part must not hide the others
        results.append({"probes_ms": None, "error": f"{type(exc).__name__}: {exc}"})
    for name in args.presets.split(","):
        for passes in args.passes.split(","):
            for resident in (False, True) if args.resident else (False,):
                try:
                    results.append(measure(name, args.frames, passes, resident))
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    row = {"preset": name, "gl_passes": passes, "resident": resident, "error": error}
                    results.append(row)
    text = json.dumps(results, indent=1)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
