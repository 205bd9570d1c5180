"""Where the fixed per-frame time of a GL frame goes (a diagnostic, not a benchmark of record).

Times, for one preset and output mode, medians over ``--frames`` frames (ms):

* ``process``: the whole public call (owned arrays);
* ``thread_call``: handing a no-op to the GL thread and back;
* ``session_run``: a no-op through ``session.run`` (make current, health check, release);
* ``make_release``: ``eglMakeCurrent`` + release on the GL thread;
* ``health``: the health check alone (context current);
* ``submit`` / ``wait`` / ``collect``: the pipeline's three steps, inside one ``session.run``;
* ``gpu``: the GL timer query of ``submit``;

and the top functions of a cProfile of ``process`` (by total time). With ``--lent``, also the wall
time and profile of ``process_resident`` (GL buffer in, textures out) and, where PyTorch and CUDA
exist, ``process_cuda``. Prints JSON.

    python benchmarks/frame_overhead.py --preset selfie --mode both --frames 300
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time

import numpy as np

import gpu_seg
from gpu_seg.tools.bench.cases import MODES, PRESETS, model_like_tensor


def _median_ms(fn, frames: int) -> float:
    samples = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def measure(preset: str, mode: str, frames: int, readback: str | None) -> dict:
    case = PRESETS[preset]
    tensor = model_like_tensor(case.tensor_shape, np.random.default_rng(7))
    size = case.output_size
    conf, cat = MODES[mode]
    pp = gpu_seg.SegmentationPostprocessor(
        case.activation, conf, cat, backend="gl", time_gpu=True, software_renderer="gl"
    )
    pp.process(tensor, size)
    generation = pp._supervisor.generation
    session, pipeline = generation.session, generation.pipeline
    if readback:
        pipeline.readback = readback
    pp.process(tensor, size)
    out: dict = {"preset": preset, "mode": mode, "readback": pipeline.readback}
    out["renderer"] = session.info.renderer
    for _ in range(20):
        pp.process(tensor, size)
    out["process"] = _median_ms(lambda: pp.process(tensor, size), frames)
    out["thread_call"] = _median_ms(lambda: session.thread.call(lambda: None), frames)
    out["session_run"] = _median_ms(lambda: session.run(lambda: None), frames)

    egl_context = session.egl_context

    def on_thread(fn):  # fn timed on the GL thread, the context current
        def body():
            if not egl_context.is_current():
                egl_context.make_current()
            return _median_ms(fn, frames)

        return session.thread.call(body)

    out["make_release"] = on_thread(lambda: (egl_context.make_current(), egl_context.release_current()))
    out["health"] = on_thread(session.check)
    frame = pp._frame(tensor, size)
    steps: dict[str, list[float]] = {"submit": [], "wait": [], "collect": [], "gpu": []}

    def steps_body():
        for _ in range(frames):
            c, k = frame.allocate_confidence(), frame.allocate_category()
            t0 = time.perf_counter()
            pipeline.submit(frame)
            t1 = time.perf_counter()
            pipeline.wait()
            t2 = time.perf_counter()
            pipeline.collect(c, k)
            t3 = time.perf_counter()
            steps["submit"].append((t1 - t0) * 1e3)
            steps["wait"].append((t2 - t1) * 1e3)
            steps["collect"].append((t3 - t2) * 1e3)
            if pipeline.last_gpu_ms is not None:
                steps["gpu"].append(pipeline.last_gpu_ms)

    session.run(steps_body)

    out.update({k: statistics.median(v) if v else None for k, v in steps.items()})
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(frames):
        pp.process(tensor, size)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
    out["profile_tottime"] = text.getvalue().splitlines()[:60]
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(35)
    out["profile_cumulative"] = text.getvalue().splitlines()[:70]
    gl_profile = cProfile.Profile()  # the GL thread's work (cProfile profiles one thread)
    session.thread.call(gl_profile.enable)
    for _ in range(frames):
        pp.process(tensor, size)
    session.thread.call(gl_profile.disable)
    text = io.StringIO()
    pstats.Stats(gl_profile, stream=text).sort_stats("tottime").print_stats(30)
    out["gl_thread_tottime"] = text.getvalue().splitlines()[:60]
    pp.close()
    return out


def _profile(session, call, frames: int, rows: int = 30) -> list[str]:
    """The top functions (by total time) of ``frames`` calls, the caller's and the GL thread's."""
    profile = cProfile.Profile()
    session.thread.call(profile.enable)
    profile.enable()
    for _ in range(frames):
        call()
    profile.disable()
    session.thread.call(profile.disable)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(rows)
    return text.getvalue().splitlines()[: rows + 10]


def measure_lent(preset: str, mode: str, frames: int) -> dict:
    """Wall time and profile of ``process_resident`` (GL buffer in, textures out) and, where PyTorch
    and CUDA exist, ``process_cuda`` (CUDA tensor in, CUDA arrays out), without ``time_gpu`` (whose
    timer read is a GPU round trip)."""
    case = PRESETS[preset]
    tensor = model_like_tensor(case.tensor_shape, np.random.default_rng(7))
    size = case.output_size
    conf, cat = MODES[mode]
    out: dict = {"preset": preset, "mode": mode}
    with gpu_seg.SegmentationPostprocessor(case.activation, conf, cat, backend="gl") as pp:
        buffer = pp.run_gl(lambda ctx: ctx.buffer(tensor.tobytes()))
        source = gpu_seg.GLTensor(buffer, tensor.shape)
        for _ in range(10):
            pp.process_resident(source, size)
        session = pp._supervisor.generation.session
        out["renderer"] = session.info.renderer
        out["resident_ms"] = _median_ms(lambda: pp.process_resident(source, size), frames)
        out["resident_profile"] = _profile(session, lambda: pp.process_resident(source, size), frames)
        try:
            import torch

            if torch.cuda.is_available():
                device_tensor = torch.from_numpy(tensor).cuda()
                for _ in range(10):
                    pp.process_cuda(device_tensor, size)
                torch.cuda.synchronize()

                def cuda_frame():
                    pp.process_cuda(device_tensor, size)
                    torch.cuda.synchronize()

                out["cuda_ms"] = _median_ms(cuda_frame, frames)
                out["cuda_profile"] = _profile(session, cuda_frame, frames)
        except Exception as exc:  # the resident figures stand without CUDA
            out["cuda_error"] = f"{type(exc).__name__}: {exc}"
        pp.run_gl(lambda ctx: buffer.release())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append")
    parser.add_argument("--mode", default="both")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--readback", default=None)
    parser.add_argument(
        "--lent", action="store_true", help="also process_resident and process_cuda frames (wall, profile)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = [measure(p, args.mode, args.frames, args.readback) for p in (args.preset or ["selfie"])]
    if args.lent:
        results += [measure_lent(p, args.mode, args.frames) for p in (args.preset or ["selfie"])]
    text = json.dumps(results, indent=1)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)
    for result in results:
        shown = {k: v for k, v in result.items() if not isinstance(v, list)}
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in shown.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
