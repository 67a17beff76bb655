# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Resuming an interrupted run: the README's two commands report the resumed model, not the interrupted one.

anomalib's ``Engine.train`` (``anomalib train --ckpt_path``) resumes, saves the new checkpoint, then tests the
checkpoint it was GIVEN. The README documents ``anomalib fit --ckpt_path <interrupted>`` followed by
``anomalib test --ckpt_path <new>``; this test runs the same two Engine calls.
"""

from __future__ import annotations

from pathlib import Path

import torch
from anomalib.engine import Engine

from anomalib_pnpt.data import MultiClassMVTecAD
from tests.calibrated_models import MODELS


def _engine(folder: Path, epochs: int) -> Engine:
    return Engine(
        default_root_dir=folder, max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False
    )


def test_fit_then_test_reports_the_resumed_checkpoint(demo_root: Path, tmp_path: Path) -> None:
    cls, arguments = MODELS["Pnpt"]
    small = {"backbone": "tf_efficientnet_lite0", "pre_trained": False, "image_size": 128, **arguments}
    datamodule = MultiClassMVTecAD(root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    interrupted_engine = _engine(tmp_path / "interrupted", 1)
    interrupted_engine.fit(cls(**small, training={"seed": 0, "learning_rate": 1e-2}), datamodule=datamodule)
    (interrupted,) = (tmp_path / "interrupted").rglob("*.ckpt")

    resumed_engine = _engine(tmp_path / "resumed", 3)
    resumed_model = cls(**small, training={"seed": 0, "learning_rate": 1e-2})
    resumed_engine.fit(resumed_model, datamodule=datamodule, ckpt_path=interrupted)  # anomalib fit --ckpt_path
    (resumed,) = (tmp_path / "resumed").rglob("*.ckpt")
    assert torch.load(resumed, weights_only=False)["epoch"] == 2  # trained on to the new length

    reported = resumed_engine.test(resumed_model, datamodule=datamodule, ckpt_path=resumed)  # anomalib test
    in_memory = _engine(tmp_path / "check", 3).test(resumed_model, datamodule=datamodule)
    old = _engine(tmp_path / "old", 3).test(
        cls(**small, training={"seed": 0}), datamodule=datamodule, ckpt_path=interrupted
    )
    assert reported[0] == in_memory[0]
    assert reported[0] != old[0]  # what `anomalib train --ckpt_path <interrupted>` would have reported
