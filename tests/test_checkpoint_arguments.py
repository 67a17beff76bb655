# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A model loaded through ``ckpt_path`` (``anomalib predict / test``) is the checkpoint's model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from anomalib_pnpt import NetworkWithMemory, OneNip, Pnpt
from anomalib_pnpt.checkpoint_arguments import CheckpointArgumentError
from tests.calibrated_models import calibrated_memory_model, calibrated_model, class_images

CLASSES = {"Pnpt": Pnpt, "OneNip": OneNip}
# A scoring setting that is not the default: left out on the command line, it would silently change every score.
SCORING = {
    "Pnpt": {"fusion_weight": 1.0},
    "OneNip": {},  # (every OneNIP argument that scores also sizes the network: the adopted backbone is the check)
    "OneNip+memory": {"map_weight": 0.5, "score_weight": 0.5, "sampling_ratio": 1.0},
}


def _checkpoint(name: str, folder: Path, **overrides: object) -> tuple[torch.nn.Module, Path]:
    if name == "OneNip+memory":
        model = calibrated_memory_model("OneNip", **overrides)
    else:
        model = calibrated_model(name, **overrides)
    trainer = Trainer(logger=False, enable_progress_bar=False, default_root_dir=folder)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(folder / "model.ckpt")
    return model, folder / "model.ckpt"


def _restore(model: torch.nn.Module, path: Path) -> None:
    """What Lightning's ``restore_model`` does for ``trainer.predict(ckpt_path=...)``: the hook, then the weights."""
    checkpoint = torch.load(path, weights_only=False)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])


@pytest.mark.parametrize("name", list(SCORING))
def test_a_model_built_with_no_arguments_becomes_the_checkpoints_model(name: str, tmp_path: Path) -> None:
    trained, path = _checkpoint(name, tmp_path, **SCORING[name])
    # As ``anomalib predict --model <class> --ckpt_path`` builds it: the default architecture, default scoring.
    loaded = NetworkWithMemory() if name == "OneNip+memory" else CLASSES[name](pre_trained=False)
    _restore(loaded, path)
    hparams = loaded.hparams["network"]["init_args"] if name == "OneNip+memory" else loaded.hparams
    assert hparams["backbone"] == "tf_efficientnet_lite0"
    assert {key: loaded.hparams.get(key, hparams.get(key)) for key in SCORING[name]} == SCORING[name]
    loaded.eval()
    images = class_images([0, 1, 2, 2], seed=5)
    with torch.no_grad():
        expected, got = trained(images), loaded(images)
    assert torch.equal(got.pred_category_id, expected.pred_category_id)
    assert torch.equal(got.pred_label, expected.pred_label)
    assert torch.allclose(got.pred_score, expected.pred_score, atol=1e-5)
    assert torch.allclose(got.anomaly_map, expected.anomaly_map, atol=1e-5)


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_given_argument_that_contradicts_the_checkpoint_stops_the_load(name: str, tmp_path: Path) -> None:
    _, path = _checkpoint(name, tmp_path)
    with pytest.raises(CheckpointArgumentError, match=r"--model.hidden_dim 64 \(checkpoint: 32\)"):
        _restore(CLASSES[name](hidden_dim=64, pre_trained=False), path)
    # Arguments that only shape training are the caller's (a resumed fit with another learning rate).
    _restore(
        CLASSES[name](backbone="tf_efficientnet_lite0", training={"learning_rate": 0.123}, pre_trained=False), path
    )
    # load_from_checkpoint's keyword arguments are overrides the caller asked for.
    override = {"training": {"seed": 3}} if name == "OneNip" else {"fusion_weight": 1.0}
    loaded = CLASSES[name].load_from_checkpoint(path, **override)
    assert loaded.hparams["hidden_dim"] == 32  # the checkpoint's
    assert {key: loaded.hparams[key] for key in override} == override  # and the caller's override
