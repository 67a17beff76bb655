# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Models built by name get what their backbone was trained with: its normalisation and its weights."""

from __future__ import annotations

from anomalib_pnpt.model_factory import build_model
from tests.tiny_models import PADIM


def test_stock_models_get_their_backbones_pre_processing_and_weights() -> None:
    import torch
    from torchvision.transforms.v2 import Normalize

    from anomalib_pnpt.backbones import load_offline_state_dict

    def normalize(model: torch.nn.Module) -> Normalize:
        return next(t for t in model.pre_processor.transform.transforms if isinstance(t, Normalize))

    pretrained = build_model("anomalib.models.Padim", {**PADIM, "pre_trained": True})
    assert normalize(pretrained).mean == [0.5, 0.5, 0.5]
    assert normalize(pretrained).std == [0.5, 0.5, 0.5]
    stem = load_offline_state_dict("tf_efficientnet_lite0")["conv_stem.weight"]
    extractor = pretrained.model.feature_extractor.feature_extractor
    assert torch.equal(extractor.conv_stem.weight, stem)
    # pre_trained=False means random weights, as on the anomalib CLI.
    random = build_model("anomalib.models.Padim", {**PADIM, "pre_trained": False})
    assert not torch.equal(random.model.feature_extractor.feature_extractor.conv_stem.weight, stem)
    # An explicit pre-processor is kept.
    wrn = build_model("anomalib.models.Padim", {**PADIM, "pre_processor": True})
    assert normalize(wrn).mean == [0.485, 0.456, 0.406]
