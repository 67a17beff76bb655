# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Learning-rate schedules: warm-up then cosine decay, the paper's step, and the models' choice of them."""

from __future__ import annotations

import itertools

import pytest
import torch

from anomalib_pnpt import OneNip, Pnpt
from anomalib_pnpt.lr_schedule import lr_scheduler_config


def _rates(schedule: str, steps: int, **kwargs: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    config = lr_scheduler_config(optimizer, schedule, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        config["scheduler"].step()
    return rates


def test_warmup_rises_linearly_then_cosine_falls_to_the_final_ratio() -> None:
    rates = _rates("warmup_cosine", 50, total_steps=50, warmup_steps=10)
    assert rates[:10] == pytest.approx([2.0 * (i + 1) / 10 for i in range(10)])
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] == pytest.approx(0.2)


def test_step_schedule_drops_tenfold_after_the_fraction_of_epochs() -> None:
    assert _rates("step", 10, max_epochs=10) == pytest.approx([2.0] * 8 + [0.2] * 2)


def test_constant_has_no_scheduler_and_unknown_names_fail_at_construction() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert lr_scheduler_config(optimizer, "constant", total_steps=10) is None
    for model_class in (Pnpt, OneNip):
        with pytest.raises(ValueError, match="lr_schedule"):
            model_class(backbone="tf_efficientnet_lite0", pre_trained=False, lr_schedule="cosine")


def test_models_keep_their_papers_schedule_by_default() -> None:
    pnpt = Pnpt(backbone="tf_efficientnet_lite0", pre_trained=False, hidden_dim=32, num_semantic_tokens=4, num_heads=4)
    assert set(pnpt.configure_optimizers()) == {"optimizer"}  # PNPT's paper: no schedule, no clipping
    assert pnpt.trainer_arguments["gradient_clip_val"] == 0.0
    onenip = OneNip(backbone="tf_efficientnet_lite0", pre_trained=False, hidden_dim=32, num_heads=4)
    assert onenip.lr_schedule == "step"
    assert onenip.trainer_arguments["gradient_clip_val"] == pytest.approx(0.1)


def test_warmup_cosine_steps_every_batch_in_a_real_fit(demo_root) -> None:
    from anomalib.engine import Engine

    from anomalib_pnpt.data import MultiClassMVTecAD

    model = Pnpt(
        backbone="tf_efficientnet_lite0",
        pre_trained=False,
        image_size=64,
        hidden_dim=32,
        num_semantic_tokens=4,
        num_heads=4,
        num_layers=1,
        learning_rate=1e-3,
        lr_schedule="warmup_cosine",
        warmup_steps=2,
        gradient_clip=0.5,
    )
    datamodule = MultiClassMVTecAD(root=demo_root, categories=["disc", "weave"], num_workers=0, train_batch_size=4)
    engine = Engine(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False, check_val_every_n_epoch=2)
    engine.fit(model, datamodule=datamodule)
    [config] = engine.trainer.lr_scheduler_configs
    assert config.interval == "step"
    steps = engine.trainer.global_step
    assert steps == engine.trainer.estimated_stepping_batches
    # At the end of the cosine the rate is the final tenth of the base rate.
    assert engine.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4, rel=0.05)
    assert engine.trainer.gradient_clip_val == 0.5
