# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Learning-rate schedules of both models, each its paper's.

* ``"constant"`` -- no schedule (PNPT's paper gives none).
* ``"step"`` -- x0.1 after a fraction of the epochs (OneNIP's official recipe: epoch 800 of 1000).

Example:
    >>> import torch
    >>> optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> config = lr_scheduler_config(optimizer, "step", max_epochs=10)
    >>> rates = []
    >>> for _ in range(10):
    ...     rates.append(round(optimizer.param_groups[0]["lr"], 3))
    ...     optimizer.step()
    ...     config["scheduler"].step()
    >>> rates[7], rates[8]
    (1.0, 0.1)
"""

from __future__ import annotations

from typing import Any

import torch

SCHEDULES = ("constant", "step")


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
    max_epochs: int | None = None,
    drop_fraction: float = 0.8,
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` entry for ``schedule`` (``None`` for ``"constant"`` or unknown length).

    Args:
        optimizer: The optimiser.
        schedule: One of :data:`SCHEDULES`.
        max_epochs: Training epochs (``step``).
        drop_fraction: Fraction of the epochs after which ``step`` multiplies the rate by 0.1.

    Returns:
        ``{"scheduler": ..., "interval": "epoch"}`` or ``None``.

    Raises:
        ValueError: For an unknown schedule name.
    """
    validate_schedule(schedule)
    if schedule == "step" and max_epochs and max_epochs >= 1:
        milestone = max(1, round(drop_fraction * max_epochs))
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=0.1)
        return {"scheduler": scheduler, "interval": "epoch"}
    return None
