# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT's named presets (``Pnpt(preset=...)``, ``--model.preset``); see :mod:`anomalib_pnpt.presets`.

- ``paper``: Yao et al., IEEE TII 2024: wide_resnet50_2 layers 1-3, 256 px, C = 760, N = 40 semantic tokens,
  M = 4 SACE/CSCD pairs, per-scale HPE with the jitter on the embeddings E (Sec. III-C), AdamW 1e-4.
- ``cpu``: sized to train on a 2-core CPU without network: the offline ImageNet EfficientNet-Lite2 (stride 4/8/16
  levels, 24 + 48 + 120 channels, the analogue of WRN50's layers 1-3), C = 128, N = 20, a higher learning rate for
  few epochs, and the joint HPE with the jitter on the patch vectors, measured better than the paper's per-scale
  HPE at this budget (``benchmarks/FINDINGS.md``).
- ``lineside``: ``cpu`` with M = 2 pairs, for the smallest inference cost (OpenVINO FP32, 2 cores, 256 px: 30 ms
  against 37 ms with 4 pairs, ``benchmarks/deployment_cost.py``).

The FFN width is not preset: its default, ``4 * hidden_dim``, is what every preset uses (760 -> 3040, 128 -> 512).

Example:
    >>> PRESETS["lineside"]["num_layers"], PRESETS["cpu"]["num_layers"]
    (2, 4)
"""

from __future__ import annotations

from typing import Any

_CPU: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite2",
    "layers": [1, 2, 3],
    "image_size": 256,
    "hidden_dim": 128,
    "num_semantic_tokens": 20,
    "num_layers": 4,
    "scale_projection": "joint",
    "noise_target": "patch",
    "learning_rate": 5e-4,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "backbone": "wide_resnet50_2",
        "layers": [1, 2, 3],
        "image_size": 256,
        "hidden_dim": 760,
        "num_semantic_tokens": 40,
        "num_layers": 4,
        "scale_projection": "per_scale",
        "noise_target": "embedding",
        "learning_rate": 1e-4,
    },
    "cpu": _CPU,
    "lineside": {**_CPU, "num_layers": 2},
}
