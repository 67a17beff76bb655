# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Multi-class (unified) industrial anomaly detection for anomalib.

The top-level names are imported lazily so that ``import anomalib_pnpt`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "BackbonePreProcessor": "anomalib_pnpt.pre_processing",
    "FastPatchcore": "anomalib_pnpt.coreset",
    "FrozenFeatureExtractor": "anomalib_pnpt.backbones",
    "MultiClassMVTecAD": "anomalib_pnpt.data",
    "MultiClassVisa": "anomalib_pnpt.data",
    "MultiClassBTAD": "anomalib_pnpt.data",
    "MultiClassFolder": "anomalib_pnpt.data",
    "NetworkWithMemory": "anomalib_pnpt.models",
    "PerClassEvaluation": "anomalib_pnpt.evaluation",
    "OneNip": "anomalib_pnpt.models",
    "OneNipModel": "anomalib_pnpt.models",
    "Pnpt": "anomalib_pnpt.models",
    "PnptModel": "anomalib_pnpt.models",
}

__all__ = [
    "BackbonePreProcessor",
    "FastPatchcore",
    "FrozenFeatureExtractor",
    "MultiClassBTAD",
    "MultiClassFolder",
    "MultiClassMVTecAD",
    "MultiClassVisa",
    "NetworkWithMemory",
    "OneNip",
    "OneNipModel",
    "PerClassEvaluation",
    "Pnpt",
    "PnptModel",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'anomalib_pnpt' has no attribute '{name}'"
    raise AttributeError(msg)
