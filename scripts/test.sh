#!/usr/bin/env bash
# Sets up the environment (first run: several minutes) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
export ANOMALIB_PNPT_DATA="${ANOMALIB_PNPT_DATA:-$(cd .. && pwd)/shared/data}"
.venv/bin/python -m pytest -q "$@"
