#!/usr/bin/env bash
# Sets up the environment and runs the demo: one model trained over all embedded demo classes,
# per-class metrics table printed, anomaly-map pictures written under results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/python -m anomalib_pnpt.demo "$@"
