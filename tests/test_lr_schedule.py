# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Learning-rate schedules: the paper's step, none, and each model's choice."""

from __future__ import annotations

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


def test_step_schedule_drops_tenfold_after_the_fraction_of_epochs() -> None:
    assert _rates("step", 10, max_epochs=10) == pytest.approx([2.0] * 8 + [0.2] * 2)


def test_constant_has_no_scheduler_and_unknown_names_fail() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert lr_scheduler_config(optimizer, "constant", max_epochs=10) is None
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_scheduler_config(optimizer, "cosine")


def test_models_keep_their_papers_schedule_by_default() -> None:
    pnpt = Pnpt(backbone="tf_efficientnet_lite0", pre_trained=False, hidden_dim=32)
    assert set(pnpt.configure_optimizers()) == {"optimizer"}  # PNPT's paper: no schedule, no clipping
    assert pnpt.trainer_arguments["gradient_clip_val"] == 0.0
    onenip = OneNip(backbone="tf_efficientnet_lite0", pre_trained=False, hidden_dim=32)
    assert onenip.lr_schedule == "step"
    assert onenip.trainer_arguments["gradient_clip_val"] == pytest.approx(0.1)
