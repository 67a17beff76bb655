# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's supervised refiner: a small decoder from the reconstruction residual to a sharp anomaly mask.

Reconstruction errors at stride 16 give blurry maps. The refiner (Gao, ECCV 2024, Sec. 3.4) takes the
residual ``|F - F_hat|`` and upsamples it with two ``[conv3x3 -> BN -> ReLU -> ConvTranspose 2x2/2]``
blocks to 1/4 resolution, then a 1x1 convolution gives one logit per pixel; the sigmoid is upsampled
(bilinear) to the input size. It is trained with a Dice loss against the masks of the synthetic anomalies
(all zeros for normal images), and its gradients also flow into the reconstruction network.

Example:
    >>> import torch
    >>> refiner = Refiner(in_channels=12, channels=8)
    >>> refiner(torch.rand(2, 12, 14, 14), image_size=(224, 224)).shape
    torch.Size([2, 1, 224, 224])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class Refiner(nn.Module):
    """Residual-to-mask decoder.

    Args:
        in_channels: Channels of the residual (the backbone feature width, 272 for EfficientNet-B4).
        channels: Width of the two upsampling blocks (OneNIP: 128).
    """

    def __init__(self, in_channels: int, channels: int = 128) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for _ in range(2):
            blocks += [
                nn.Conv2d(width, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            ]
            width = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, residual: torch.Tensor, image_size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Anomaly probability ``(B, 1, H, W)`` in ``[0, 1]`` from the residual ``(B, C, h, w)``."""
        probabilities = torch.sigmoid(self.head(self.blocks(residual)))
        return F.interpolate(probabilities, size=tuple(image_size), mode="bilinear", align_corners=False)
