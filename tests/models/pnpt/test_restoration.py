# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT's restoration option (``restoration_weight``, not in the paper): trained to put normal features back where a
synthetic defect is, from copies made by the shared generator."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from anomalib_pnpt import Pnpt
from tests.models.pnpt.test_pnpt import SMALL


def _model(restoration_weight: float) -> tuple[Pnpt, torch.Tensor]:
    torch.manual_seed(0)
    model = Pnpt(**SMALL, pre_trained=False, prior_residual=True, restoration_weight=restoration_weight)
    images = model.pre_processor.transform(torch.rand(4, 3, 128, 128))
    model.build_prompt_pool([(images, torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])], num_classes=2)
    return model, images


def test_the_restoration_term_reconstructs_the_clean_features_from_the_defective_copy() -> None:
    """``l_rec + w * l_res``: ``l_res`` is Eq. 7 with the copy as the input (its prior retrieved from it) and the
    clean image's features as the target, not the copy's own."""
    model, images = _model(0.5)
    net = model.model.eval()  # no jitter: the terms are deterministic
    torch.manual_seed(1)
    copies, masks = model.anomaly_generator(images)
    assert bool((masks.flatten(1).sum(1) > 0).all())
    clean, synthetic = net.extract_features(images), net.extract_features(copies)
    net.hpe.inverse_projections[0].bias.data.fill_(0.1)  # a non-zero correction: the streams depend on the input
    with torch.no_grad():
        total = float(net.training_loss(clean, synthetic, 0.5))
        reconstruction = float(net.training_loss(clean))
        restored = net.reconstruct(synthetic, net.retrieve_prior(synthetic).prompts)
        to_clean, to_copy = float(net.loss(clean, *restored)), float(net.loss(synthetic, *restored))
    assert abs(to_clean - to_copy) > 1e-3
    assert total == pytest.approx(reconstruction + 0.5 * to_clean, rel=1e-5)
    assert float(net.training_loss(clean, None, 0.5)) == pytest.approx(reconstruction)


def test_training_step_adds_the_restoration_term_on_fresh_copies() -> None:
    model, images = _model(0.5)
    batch = SimpleNamespace(image=images, image_path=None)
    model.model.train()
    with_copies = float(model.training_step(batch)["loss"])
    only_reconstruction = float(model.model.training_loss(model.model.extract_features(images)))
    assert with_copies > only_reconstruction + 1e-4


def test_without_restoration_no_generator_and_the_loss_is_eq7() -> None:
    model, images = _model(0.0)
    assert model.anomaly_generator is None
    batch = SimpleNamespace(image=images, image_path=None)
    model.model.train()
    torch.manual_seed(2)
    step = float(model.training_step(batch)["loss"])
    torch.manual_seed(2)
    assert step == pytest.approx(float(model.model.training_loss(model.model.extract_features(images))))


def test_a_checkpoint_needs_no_texture_folder_to_load(tmp_path: Path) -> None:
    """The generator is made when training first needs it: constructing (as loading a checkpoint does) with a
    texture folder that does not exist here succeeds; training with it fails clearly."""
    model = Pnpt(**SMALL, pre_trained=False, restoration_weight=1.0, training={"texture_dir": str(tmp_path / "absent")})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _ = model.anomaly_generator


def test_negative_restoration_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="restoration_weight"):
        Pnpt(**SMALL, pre_trained=False, restoration_weight=-1.0)
