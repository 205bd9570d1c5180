#!/bin/sh
# Produce the published figures: benchmarks/results-NAME.{json,png,txt}, then the generated part
# of benchmarks/RESULTS.md. NAME defaults to "llvmpipe"; pass e.g. "rtx4090" on another machine
# (and add its section to RESULTS.md by hand, or keep one RESULTS file per machine).
#
#   pip install -e ".[mediapipe,bench]"   # + optionally: pip install torch (the PyTorch CPU peer)
#   sh benchmarks/reproduce.sh [NAME]
set -eu
name="${1:-llvmpipe}"
cd "$(dirname "$0")/.."
gpu-seg verify
gpu-seg bench --json "benchmarks/results-$name.json" --plot "benchmarks/results-$name.png" \
    | tee "benchmarks/results-$name.txt"
python benchmarks/render_results.py "benchmarks/results-$name.json" --update benchmarks/RESULTS.md
