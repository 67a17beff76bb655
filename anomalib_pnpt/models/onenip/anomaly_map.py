# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's anomaly map and image score (Gao, ECCV 2024, Sec. 3.4).

``S_rec = ||F - F_hat||_2`` over channels, bilinearly upsampled to the input; with the refiner,
``S = (1 - alpha) * S_rec + alpha * s * M_hat`` where ``M_hat`` is the refiner's probability map and ``s``
brings it to the scale of ``S_rec``. The official code sets ``s`` to ``(max + min) / 2`` of ``S_rec`` over
the whole TEST set; we calibrate it on normal training images instead (``s`` = the largest ``S_rec``
value seen there, so a certain refiner detection weighs as much as the strongest normal reconstruction
error), stored in the ``refiner_scale`` buffer and so in checkpoints and exports. The image score is the
maximum of the map after a 16 x 16 average pooling (stride 1).

Example:
    >>> import torch
    >>> generator = OneNipAnomalyMap(alpha=0.5, score_pool=4)
    >>> features = torch.rand(2, 8, 7, 7)
    >>> anomaly_map, score = generator(features, features, None, image_size=(28, 28))
    >>> anomaly_map.shape, float(score.abs().max())
    (torch.Size([2, 1, 28, 28]), 0.0)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class OneNipAnomalyMap(nn.Module):
    """Fuse the reconstruction error with the refiner's map; image score by average-pooled maximum.

    Args:
        alpha: Refiner weight (OneNIP: 0.5); ignored without a refiner map.
        score_pool: Side of the average pooling before the image-score maximum (OneNIP: 16).
    """

    def __init__(self, alpha: float = 0.5, score_pool: int = 16) -> None:
        super().__init__()
        self.alpha = alpha
        self.score_pool = score_pool
        self.register_buffer("refiner_scale", torch.tensor(1.0))

    @staticmethod
    def reconstruction_error(
        features: torch.Tensor,
        reconstruction: torch.Tensor,
        image_size: tuple[int, int] | torch.Size,
    ) -> torch.Tensor:
        """``S_rec``: L2 feature distance per location, upsampled to ``image_size`` ``(B, 1, H, W)``."""
        distance = (features - reconstruction).pow(2).sum(dim=1, keepdim=True).sqrt()
        return F.interpolate(distance, size=tuple(image_size), mode="bilinear", align_corners=False)

    def forward(
        self,
        features: torch.Tensor,
        reconstruction: torch.Tensor,
        refined: torch.Tensor | None,
        image_size: tuple[int, int] | torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(anomaly_map (B, 1, H, W), score (B,))``."""
        anomaly_map = self.reconstruction_error(features, reconstruction, image_size)
        if refined is not None:
            anomaly_map = (1 - self.alpha) * anomaly_map + self.alpha * self.refiner_scale * refined
        return anomaly_map, self.image_score(anomaly_map)

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image score ``(B,)``: the maximum of the ``score_pool`` x ``score_pool`` average-pooled map."""
        pooled = F.avg_pool2d(anomaly_map, self.score_pool, stride=1) if self.score_pool > 1 else anomaly_map
        return pooled.flatten(1).amax(dim=1)
