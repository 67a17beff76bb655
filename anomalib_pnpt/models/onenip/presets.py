# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's named presets (``OneNip(preset=...)``, ``--model.preset``); see :mod:`anomalib_pnpt.presets`.

- ``paper``: Gao, ECCV 2024: EfficientNet-B4 stages 1-4 at stride 16, 224 px, hidden 256, 4 encoder + 4 decoder
  layers, FFN 1024, AdamW 1e-4, a new synthetic copy every step.
- ``cpu``: sized to train on a 2-core CPU without network: the offline ImageNet EfficientNet-Lite2 (stages 1-4,
  16 + 24 + 48 + 120 = 208 channels, the analogue of B4's 272), hidden 128, 2 + 2 layers, FFN 512, a higher
  learning rate for few epochs, each image's synthetic copy with its features reused for 3 epochs (the same
  accuracy as a new copy every step, ~1.4x faster epochs), and no dropout on the attention weights (dropout stays on
  the residual branches and FFNs): PyTorch's CPU attention then runs its fused kernel: 10 epochs in 711 against 1057 s
  (``benchmarks/FINDINGS.md``).
- ``lineside``: ``cpu`` with 1 + 1 layers, for the smallest inference cost: 25.5 against 30.2 ms per image at the same
  image AUROC and 0.7 lower pixel AUROC (both trained with attention dropout 0.1; ``benchmarks/deployment_cost.py``,
  ``benchmarks/FINDINGS.md``).

Example:
    >>> PRESETS["cpu"]["hidden_dim"], PRESETS["paper"]["hidden_dim"], PRESETS["lineside"]["num_encoder_layers"]
    (128, 256, 1)
"""

from __future__ import annotations

from typing import Any

_CPU: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite2",
    "layers": [0, 1, 2, 3],
    "image_size": 224,
    "hidden_dim": 128,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "ffn_dim": 512,
    "learning_rate": 5e-4,
    "synthetic_refresh_epochs": 3,
    "attention_dropout": 0.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "backbone": "efficientnet_b4",
        "layers": [0, 1, 2, 3],
        "image_size": 224,
        "hidden_dim": 256,
        "num_encoder_layers": 4,
        "num_decoder_layers": 4,
        "ffn_dim": 1024,
        "learning_rate": 1e-4,
        "synthetic_refresh_epochs": 1,
        "attention_dropout": 0.1,
    },
    "cpu": _CPU,
    "lineside": {**_CPU, "num_encoder_layers": 1, "num_decoder_layers": 1},
}
