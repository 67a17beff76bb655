# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Arguments of tiny stock models the tests share (random Lite0 weights: pipelines, not accuracy)."""

PADIM = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2"],
    "pre_trained": False,
    "n_features": 20,
}
