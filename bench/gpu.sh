#!/usr/bin/env bash
# The paper's Table 6 on a lent GPU in at most 8 minutes: diffusion fit steps/s, sampled rows/s and
# agent update ms at paper size (fp32 / bf16 / bf16 + torch.compile where supported), then one
# shortened round of the APL paper preset end to end, wall time per stage (bench/gpu.py says how).
#
#   bench/gpu.sh                  # on the GPU machine: writes results/gpu/README.md and gpu.json
#   bench/gpu.sh --tiny           # the same path with tiny sizes, on CPU, in about a minute
#   bench/gpu.sh --tiny --out DIR
#
# Needs the package's dependencies (torch with CUDA on the GPU machine, dvc, MuJoCo). A copy of
# the tree without .git can name its commit: CFDG_COMMIT=<sha> bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1
export CFDG_BENCH_COMMAND="bench/gpu.sh${*:+ $*}"
python -c "import torch, dvc, mujoco" 2>/dev/null || {
    echo "bench/gpu.sh: needs torch, dvc and mujoco importable (pip install -e .)" >&2
    exit 2
}
exec python bench/gpu.py "$@"
