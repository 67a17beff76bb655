# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Learning-rate schedules of both models, chosen by name (plain data, so the CLI and checkpoints carry it).

* ``"constant"`` -- no schedule (PNPT's paper gives none).
* ``"step"`` -- x0.1 after a fraction of the epochs (OneNIP's official recipe: epoch 800 of 1000).
* ``"warmup_cosine"`` -- linear warm-up over ``warmup_steps`` optimiser steps, then cosine decay to
  ``final_lr_ratio`` of the base rate at the last step (the fast-converging recipe of Dinomaly: 100 warm-up
  iterations, cosine to a tenth), stepped every batch.

Example:
    >>> import torch
    >>> optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> config = lr_scheduler_config(optimizer, "warmup_cosine", total_steps=10, warmup_steps=2)
    >>> rates = []
    >>> for _ in range(10):
    ...     rates.append(round(optimizer.param_groups[0]["lr"], 3))
    ...     optimizer.step()
    ...     config["scheduler"].step()
    >>> rates[:3], rates[-1]
    ([0.5, 1.0, 1.0], 0.1)
"""

from __future__ import annotations

import math
from typing import Any

import torch

SCHEDULES = ("constant", "step", "warmup_cosine")


def validate_schedule(schedule: str) -> str:
    """Return ``schedule`` if it is one of :data:`SCHEDULES` (models check at construction, not after the pool).

    Args:
        schedule: Schedule name.

    Returns:
        The name.

    Raises:
        ValueError: For an unknown name.
    """
    if schedule not in SCHEDULES:
        msg = f"Unknown lr_schedule '{schedule}'; choose one of {SCHEDULES}."
        raise ValueError(msg)
    return schedule


def lr_scheduler_config(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    total_steps: int | None = None,
    max_epochs: int | None = None,
    warmup_steps: int = 0,
    final_lr_ratio: float = 0.1,
    drop_fraction: float = 0.8,
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` entry for ``schedule`` (``None`` for ``"constant"`` or unknown length).

    Args:
        optimizer: The optimiser.
        schedule: One of :data:`SCHEDULES`.
        total_steps: Optimiser steps of the whole training (``warmup_cosine``).
        max_epochs: Training epochs (``step``).
        warmup_steps: Linear warm-up steps (``warmup_cosine``).
        final_lr_ratio: Last learning rate as a fraction of the base rate (``warmup_cosine``).
        drop_fraction: Fraction of the epochs after which ``step`` multiplies the rate by 0.1.

    Returns:
        ``{"scheduler": ..., "interval": "step" | "epoch"}`` or ``None``.

    Raises:
        ValueError: For an unknown schedule name.
    """
    validate_schedule(schedule)
    if schedule == "step":
        if not max_epochs or max_epochs < 1:
            return None
        milestone = max(1, round(drop_fraction * max_epochs))
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=0.1)
        return {"scheduler": scheduler, "interval": "epoch"}
    if schedule == "warmup_cosine":
        if not total_steps or total_steps < 1 or math.isinf(total_steps):
            return None
        warmup = max(0, min(warmup_steps, total_steps - 1))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup - 1)
            return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}
    return None
