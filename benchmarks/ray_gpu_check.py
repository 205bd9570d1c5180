"""GPU check of gpu_seg.distributed: the EGL device of the CUDA device Ray assigns, and a GPU worker's engine.

    python benchmarks/ray_gpu_check.py [MODEL.tflite]   (default: gpu_seg.models.selfie_segmenter())

1. For ``CUDA_VISIBLE_DEVICES`` unset, ``0``, empty, ``1`` and a bogus UUID, in a fresh process each:
   the EGL devices, the CUDA number each reports (``EGL_NV_device_cuda``) and what
   ``assign_egl_device(["0"])`` chooses.
2. As a GPU worker sets itself up (Ray assigns GPU 0, ``CUDA_VISIBLE_DEVICES=0``): the EGL device
   chosen, its GL renderer, then ``FrameSegmenter`` (the worker's engine) with the GL and the CPU
   backends on 18 real photos (640-1920 px): category masks must agree on >= 99.9 % of pixels,
   confidence masks within 2e-5. Prints ``RESULT ok`` when the device was matched and the masks agree.

It needs no Ray (the GPU machines here cannot install it). Last run (NVIDIA H200, driver 580.159.04,
before the fast CPU path was merged):
device 0 reports CUDA 0 with ``CUDA_VISIBLE_DEVICES`` unset or ``0`` and nothing with it empty, ``1`` or
a bogus UUID (the driver counts visible devices); the worker got EGL device 0, renderer "NVIDIA
H200/PCIe/SSE2"; category agreement 1.000000, worst confidence difference 3.76e-37; RESULT ok.
"""

import os
import subprocess
import sys
import tempfile
import time

PROBE = r"""
import json, os
from gpu_seg.gl.egl import devices
from gpu_seg.distributed.gpus import egl_cuda_devices, egl_device_for_gpu, assign_egl_device
found = [{"index": d.index, "nv_cuda": "EGL_NV_device_cuda" in d.extensions, "software": d.software,
          "drm": d.drm_device_file} for d in devices._iter_devices()]
numbers = egl_cuda_devices()
env = {}
if "CUDA_VISIBLE_DEVICES" in os.environ: env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
choice = assign_egl_device(["0"], env)
print(json.dumps({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "devices": found,
                  "cuda_numbers": numbers, "choice": choice and choice.__dict__, "env_after": env}))
"""


def probe(visible):
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("GPU_SEG_EGL_DEVICE", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    print("probe", repr(visible), out.stdout.strip() or out.stderr.strip()[-2000:], flush=True)


for visible in (None, "0", "", "1", "GPU-nonexistent"):
    probe(visible)

# A GPU worker as SegmentWorker sets itself up: Ray would give it GPU "0" and CUDA_VISIBLE_DEVICES=0.
os.environ["CUDA_VISIBLE_DEVICES"] = "0"
os.environ.pop("GPU_SEG_EGL_DEVICE", None)
from gpu_seg.distributed.gpus import assign_egl_device  # noqa: E402

choice = assign_egl_device(["0"])
print("worker device", choice, "GPU_SEG_EGL_DEVICE =", os.environ.get("GPU_SEG_EGL_DEVICE"), flush=True)
from gpu_seg.tools.gl_report import describe_gl  # noqa: E402

gl = describe_gl()
print("renderer", gl.get("renderer"), gl.get("version"), gl.get("error"), flush=True)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data as skdata  # noqa: E402

from gpu_seg.segmenter.batch import FrameSegmenter, LocalOutput, WorkItem  # noqa: E402

if len(sys.argv) > 1:
    model_path = sys.argv[1]
else:
    from gpu_seg.models import selfie_segmenter

    model_path = selfie_segmenter()
model = open(model_path, "rb").read()
root = tempfile.mkdtemp()
photos = []
left, right, _ = skdata.stereo_motorcycle()
for name, pixels in {
    "astronaut": skdata.astronaut(),
    "coffee": skdata.coffee(),
    "chelsea": skdata.chelsea(),
    "rocket": skdata.rocket(),
    "left": left,
    "right": right,
}.items():
    for width in (640, 1280, 1920):
        height = round(pixels.shape[0] * width / pixels.shape[1])
        path = os.path.join(root, f"{name}_{width}.png")
        cv2.imwrite(path, np.ascontiguousarray(cv2.resize(pixels, (width, height))[..., ::-1]))
        photos.append(path)
results = {}
for backend in ("gl", "cpu"):
    out = os.path.join(root, backend)
    with FrameSegmenter(model, LocalOutput(out), confidence=True, backend=backend, num_threads=1) as engine:
        for p in photos[:2]:
            list(engine.run(WorkItem(p, os.path.basename(p) + "warm")))
        start = time.perf_counter()
        records = [r for p in photos for r in engine.run(WorkItem(p, os.path.basename(p)[:-4]))]
        seconds = time.perf_counter() - start
        stats = engine.segmenters[0].stats
    results[backend] = records
    print(
        backend,
        "backends",
        sorted({r.backend for r in records}),
        f"{len(records) / seconds:.1f} frames/s",
        {k: round(v, 2) for k, v in stats.items() if k.endswith("_ms") and not k.startswith("last")},
        flush=True,
    )
worst, agree = 0.0, 1.0
for p in photos:
    stem = os.path.basename(p)[:-4]
    a = cv2.imread(os.path.join(root, "gl", stem + ".mask.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(os.path.join(root, "cpu", stem + ".mask.png"), cv2.IMREAD_UNCHANGED)
    agree = min(agree, float(np.mean(a == b)))
    ca = np.load(os.path.join(root, "gl", stem + ".confidence.npy"))
    cb = np.load(os.path.join(root, "cpu", stem + ".confidence.npy"))
    worst = max(worst, float(np.max(np.abs(ca - cb))))
print(f"gl vs cpu over {len(photos)} photos: category agreement >= {agree:.6f}, worst confidence {worst:.3g}")
print("RESULT", "ok" if agree >= 0.999 and worst <= 2e-5 and choice and choice.source == "cuda" else "CHECK")
