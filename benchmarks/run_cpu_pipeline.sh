#!/usr/bin/env bash
# Every CPU benchmark of the project, one after the other (they each use both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
$PY benchmarks/run_benchmark.py --config benchmarks/configs/baselines_industrial.yaml --resume
$PY benchmarks/feature_cache_speed.py --epochs 2
$PY benchmarks/run_benchmark.py --config benchmarks/configs/pnpt_industrial_cpu.yaml --resume
