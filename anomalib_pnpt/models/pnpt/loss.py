# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT's dual cosine reconstruction loss (Eq. 6-7).

``l_R(F*) = sum_scales (1 - cos(vec(F_input), vec(F*)))`` — the cosine between the WHOLE flattened map of
each scale, per image — and ``l_rec = l_R(F_prior*) + l_R(F_self*)``: both streams reconstruct the input's
features. Averaged over the batch.

Example:
    >>> import torch
    >>> target = [torch.rand(2, 4, 8, 8)]
    >>> abs(float(DualCosineLoss()(target, target, target))) < 1e-5  # identical maps: no loss
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def map_cosine_loss(targets: Sequence[torch.Tensor], reconstructions: Sequence[torch.Tensor]) -> torch.Tensor:
    """``l_R``: per image, sum over scales of ``1 - cos`` of the flattened maps; mean over the batch."""
    losses = [
        1 - F.cosine_similarity(target.flatten(1), reconstruction.flatten(1), dim=1)
        for target, reconstruction in zip(targets, reconstructions, strict=True)
    ]
    return torch.stack(losses).sum(dim=0).mean()


class DualCosineLoss(nn.Module):
    """``l_rec = l_R(F_prior*) + l_R(F_self*)`` (Eq. 7); a missing stream (ablation) contributes nothing."""

    def forward(
        self,
        targets: Sequence[torch.Tensor],
        prior_reconstruction: Sequence[torch.Tensor] | None,
        self_reconstruction: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Compute the loss."""
        loss = map_cosine_loss(targets, self_reconstruction)
        if prior_reconstruction is not None:
            loss = loss + map_cosine_loss(targets, prior_reconstruction)
        return loss
