# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's training objective: ``MSE_rec + MSE_res + lambda * Dice`` (Gao, ECCV 2024, Eq. 4-7).

- ``MSE_rec``: the query image's features reconstructed from its prompt, against the (clean) features.
- ``MSE_res``: the restoration stream — the features of the synthetic-anomaly copy must be restored to the
  CLEAN features of the original image.
- Dice (smooth 1, squared denominators) between the refiner's output and the synthetic masks (all zeros for
  the normal images), computed over the whole batch as one set of pixels so an all-normal batch still has a
  finite, informative loss (it pushes the predictions to zero through the denominator). lambda = 0.5.

Example:
    >>> import torch
    >>> prediction = torch.zeros(1, 1, 4, 4)
    >>> target = torch.zeros(1, 1, 4, 4)
    >>> float(dice_loss(prediction, target))
    0.0
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def dice_loss(
    prediction: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, per_image: bool = False
) -> torch.Tensor:
    """``1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)``, over the batch's pixels or per image and averaged.

    Over the whole batch, a false alarm on a normal image (all-zero mask) is diluted by the batch's true
    anomalies; per image, such an image's term is ``1 - s / (sum(p^2) + s)``, so any false alarm costs close
    to a whole image's loss (the official OneNIP code's reduction).

    Args:
        prediction: Probabilities ``(B, 1, H, W)``.
        target: Binary masks, same shape.
        smooth: Smoothing constant ``s``.
        per_image: Compute the ratio per image and average (default: over all pixels of the batch).

    Returns:
        The scalar loss.
    """
    dims = tuple(range(1, prediction.dim())) if per_image else tuple(range(prediction.dim()))
    target = target.to(prediction.dtype)
    overlap = (prediction * target).sum(dim=dims)
    ratio = (2 * overlap + smooth) / (prediction.pow(2).sum(dim=dims) + target.pow(2).sum(dim=dims) + smooth)
    return (1 - ratio).mean()


class OneNipLoss(nn.Module):
    """Sum of the reconstruction, restoration and refiner losses.

    Args:
        dice_weight: ``lambda`` (OneNIP: 0.5).
        dice_per_image: Dice per image, averaged (the official code), instead of over the batch's pixels.
    """

    def __init__(self, dice_weight: float = 0.5, dice_per_image: bool = False) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.dice_per_image = dice_per_image

    def forward(
        self,
        features: torch.Tensor,
        reconstruction: torch.Tensor,
        restoration: torch.Tensor | None = None,
        refined: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "reconstruction", "restoration", "dice"}`` (the last two only when used).

        Args:
            features: Clean query features ``(B, C, h, w)`` (the target of both streams).
            reconstruction: Query features reconstructed from the prompt.
            restoration: Synthetic-copy features restored by the model (``None``: no restoration stream).
            refined: Refiner output for the query and the synthetic copies, ``(B', 1, H, W)``.
            masks: Matching masks (zeros for the query images).
        """
        losses = {"reconstruction": F.mse_loss(reconstruction, features)}
        if restoration is not None:
            losses["restoration"] = F.mse_loss(restoration, features)
        if refined is not None and masks is not None:
            losses["dice"] = dice_loss(refined, masks, per_image=self.dice_per_image)
        total = losses["reconstruction"] + losses.get("restoration", 0.0)
        if "dice" in losses:
            total = total + self.dice_weight * losses["dice"]
        return {"loss": total, **losses}
