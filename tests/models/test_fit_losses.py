# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The learning curve's reference: each network's noise-free fit of its training images against its prior's."""

from __future__ import annotations

import torch

from tests.calibrated_models import calibrated_model, class_images


def test_pnpt_with_prior_residual_starts_exactly_at_its_prior() -> None:
    model = calibrated_model("Pnpt", prior_residual=True).train()
    features = model.model.extract_features(model.pre_processor.transform(class_images([0, 1, 2, 1])))
    losses = model.model.fit_losses(features)
    assert set(losses) == {"network", "prior"}
    assert float(losses["prior"]) > 0
    assert torch.allclose(losses["network"], losses["prior"], atol=1e-6)  # a zero correction: the prior itself
    assert model.training  # measured without jitter, the mode restored


def test_onenip_fit_compares_the_reconstruction_with_the_prompt_it_started_from() -> None:
    model = calibrated_model("OneNip").train()
    images = model.pre_processor.transform(class_images([0, 1, 2, 1]))
    features = model.model.extract_features(images)
    torch.manual_seed(0)
    losses = model.model.fit_losses(features, torch.tensor([0, 1, 2, 1]))
    torch.manual_seed(0)  # the same training prompts, drawn again
    prompts = model.model.training_prompt_features(torch.tensor([0, 1, 2, 1]))
    assert float(losses["prompt"]) == torch.nn.functional.mse_loss(prompts, features).item()
    assert float(losses["network"]) > 0
    assert model.training
