# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A model given a seed trains to the same weights and calibration twice (anomalib's CLI ignores its own seed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine

from anomalib_pnpt.data import MultiClassMVTecAD
from tests.calibrated_models import MODELS


def _train(name: str, seed: int | None, root: Path, folder: Path, other_work: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(other_work)  # the global random state differs before the model is made ...
    cls, arguments = MODELS[name]
    model = cls(
        backbone="tf_efficientnet_lite0", pre_trained=False, image_size=128, training={"seed": seed}, **arguments
    )
    torch.manual_seed(other_work)  # ... and between making it and training it (the CLI instantiates more)
    datamodule = MultiClassMVTecAD(root=root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    engine = Engine(
        default_root_dir=folder,
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(model, datamodule=datamodule)
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", ["Pnpt", "OneNip"])
def test_same_seed_same_model_whatever_the_global_random_state(name: str, demo_root: Path, tmp_path: Path) -> None:
    first = _train(name, 7, demo_root, tmp_path / "a", other_work=1)
    second = _train(name, 7, demo_root, tmp_path / "b", other_work=2)
    assert first.keys() == second.keys()
    for key in first:  # bit for bit (NaN = a calibration statistic the one held-out image per class cannot give)
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, equal_nan=True, msg=key)
    # The calibration is part of it, and the seed really chooses: another seed trains other weights.
    assert first["post_processor.table.per_class"].shape == (3, 6)
    other = _train(name, 8, demo_root, tmp_path / "c", other_work=1)
    assert any(not torch.equal(first[key], other[key]) for key in first if first[key].is_floating_point())
