# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A run without a length trains for the model's own epochs; a shortened run still ends calibrated and saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_pnpt import Pnpt
from anomalib_pnpt.data import MultiClassMVTecAD


class _StopAtStart(Callback):
    """Records the trainer's epoch limit when training starts, then stops the run."""

    max_epochs: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module
        self.max_epochs = trainer.max_epochs
        trainer.should_stop = True


def _small_pnpt() -> Pnpt:
    return Pnpt(
        backbone="tf_efficientnet_lite0",
        pre_trained=False,
        image_size=128,
        hidden_dim=32,
        num_layers=1,
    )


@pytest.mark.parametrize(("given", "expected"), [({}, Pnpt.default_max_epochs), ({"max_epochs": 3}, 3)])
def test_training_length_is_the_models_own_unless_the_user_gives_one(
    given: dict[str, int], expected: int, demo_root: Path, tmp_path: Path
) -> None:
    probe = _StopAtStart()
    datamodule = MultiClassMVTecAD(root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    engine = Engine(default_root_dir=tmp_path, callbacks=[probe], logger=False, enable_progress_bar=False, **given)
    engine.fit(_small_pnpt(), datamodule=datamodule)
    assert probe.max_epochs == expected
    assert Pnpt.default_max_epochs != 1000  # else the first case could not tell the model's length from Lightning's


def test_shortened_run_still_calibrates_and_saves_the_final_model(demo_root: Path, tmp_path: Path) -> None:
    """The shipped configs validate once, at ``max_epochs``; a user's ``--trainer.max_epochs 1`` must still end
    with the per-class calibration of the final weights and a checkpoint."""
    torch.manual_seed(0)
    datamodule = MultiClassMVTecAD(root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    model = _small_pnpt()
    engine = Engine(
        default_root_dir=tmp_path,
        max_epochs=1,
        check_val_every_n_epoch=10,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(model, datamodule=datamodule)
    assert model.post_processor.num_classes == 3  # calibrated, one set of statistics per class
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) == 1
    saved = torch.load(checkpoints[0], weights_only=False)["state_dict"]
    assert saved["post_processor.table.per_class"].shape == (3, 6)  # one row of statistics per class
