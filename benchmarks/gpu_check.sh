#!/usr/bin/env bash
# The GPU check, one command (benchmarks/gpu_check.py says what it measures):
#   bash benchmarks/gpu_check.sh                # on a GPU machine, at most 8 minutes
#   bash benchmarks/gpu_check.sh --cpu-smoke    # anywhere: the same steps on a tiny model
# Uses this checkout's src/ (no install), downloads nothing, writes benchmarks/results/gpu_check*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout 480 python benchmarks/gpu_check.py "$@"
