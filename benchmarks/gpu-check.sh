#!/usr/bin/env bash
# One run on a GPU machine, after `bash .device-kit/setup.sh` (see README "Running on a real GPU"):
# GL info, the test suite, fork and mapped memory, the CUDA tests and the GPU-resident/CUDA check, the data-path benchmark,
# recycled against fresh result memory, soaks with real context losses (plain and frames in flight),
# verify against MediaPipe, and where a frame's fixed time goes. Everything lands in $OUT (default /tmp/gpu-check); each step has its own
# time limit (env overrides), the most important first.
set -uo pipefail
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nv=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[[ -f $nv ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$nv
export GPU_SEG_CACHE_DIR=${GPU_SEG_CACHE_DIR:-$PWD/.device-kit}
export GPU_SEG_TEST_MODEL_CACHE=${GPU_SEG_TEST_MODEL_CACHE:-$GPU_SEG_CACHE_DIR}
step() { echo; echo "=== $* ($(date +%T))"; }

step info
python3 -m gpu_seg info --json >"$out/info.json" 2>&1
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in ('renderer','version','robust_context','reset_notification','error')})" "$out/info.json"

step tests
# test_models downloads from PyPI (no network on a GPU machine); attached/viewer tests skip without X.
timeout "${PYTEST_TIMEOUT:-150}" python3 -m pytest -q -p no:cacheprovider -n "${PYTEST_WORKERS:-12}" \
    --ignore=tests/test_models.py --ignore=tests/test_cuda.py -rfE 2>&1 | tee "$out/pytest.log" | tail -30

step fork: what the driver does with mapped memory in a forked child
# Zero-copy and owned views of the parent's mapped memory, read in a forked child: the right bytes, or
# a signal where the driver keeps pinned memory from children (decides whether owned_views may be a default).
timeout "${FORK_TIMEOUT:-60}" python3 -m pytest -q -s -p no:cacheprovider tests/test_fork.py -k auto_processor 2>&1 \
    | grep -E "read in a forked child|passed|failed" | tee "$out/fork.log"

step cuda tests
timeout "${CUDA_TESTS_TIMEOUT:-60}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -rfEs 2>&1 | tee "$out/pytest-cuda.log" | tail -12

step cuda and resident check
timeout "${CUDA_CHECK_TIMEOUT:-90}" python3 benchmarks/cuda_check.py --frames "${CUDA_CHECK_FRAMES:-10}" --json "$out/cuda-check.json" 2>&1 | grep -v "^INFO" | tail -40

step data path
timeout "${DATA_PATH_TIMEOUT:-120}" python3 benchmarks/gpu_data_path.py --frames "${DATA_PATH_FRAMES:-6}" --rounds 2 --json "$out/data-path.json" 2>&1 | grep -v "^INFO" | tee "$out/data-path.md"

step recycled result memory
timeout "${RECYCLED_TIMEOUT:-40}" python3 benchmarks/recycled_memory.py --frames 12 --json "$out/recycled.json" 2>&1 | grep -v "^INFO" | tail -12

step soak in flight
timeout "${SOAK_TIMEOUT:-40}" python3 -m gpu_seg soak --frames "${SOAK_FRAMES:-800}" --lose-every 100 --in-flight --json "$out/soak-in-flight.json" --quiet 2>&1 | tail -15

step soak
timeout "${SOAK_TIMEOUT:-40}" python3 -m gpu_seg soak --frames "${SOAK_FRAMES:-800}" --lose-every 100 --json "$out/soak.json" --quiet 2>&1 | tail -15

step verify
timeout "${VERIFY_TIMEOUT:-40}" python3 -m gpu_seg verify --cases "${VERIFY_CASES:-12}" --json "$out/verify.json" 2>&1 | tail -6

step passes
timeout "${PASSES_TIMEOUT:-40}" python3 benchmarks/gpu_passes.py --presets multiclass,deeplab --frames 6 --resident --json "$out/passes.json" 2>&1 | grep -v "^INFO" | tail -60

step frame overhead
timeout "${OVERHEAD_TIMEOUT:-40}" python3 benchmarks/frame_overhead.py --preset selfie --preset multiclass --preset deeplab --frames 80 --lent --json "$out/frame-overhead.json" 2>&1 | grep -v "^INFO" | tail -4
step summary
python3 benchmarks/render_gpu.py "$out/data-path.json" --cuda "$out/cuda-check.json" 2>&1 | tail -40

step done
