# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT's fused anomaly map (Eq. 8) and image score.

``F_fuse* = w * F_prior* + (1 - w) * F_self*`` per scale; the map is the sum over scales of the upsampled
per-pixel ``1 - cos`` along channels between ``F_input`` and ``F_fuse*``, smoothed with a Gaussian
(sigma 4 by default, the first author's habit). The image score is the map's maximum, or the mean of its
``top_k`` highest pixels when ``top_k`` is set (more robust to single hot pixels).

Example:
    >>> import torch
    >>> generator = PnptAnomalyMap(fusion_weight=0.5, sigma=0.0)
    >>> features = [torch.rand(1, 4, 8, 8)]
    >>> anomaly_map, score = generator(features, features, features, image_size=(32, 32))
    >>> anomaly_map.shape, float(score.abs().max()) < 1e-5
    (torch.Size([1, 1, 32, 32]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.gaussian_blur import SeparableGaussianBlur


class PnptAnomalyMap(nn.Module):
    """Anomaly map and image score from input and reconstructed features.

    Args:
        fusion_weight: ``w``, the prior stream's weight in ``F_fuse*``.
        sigma: Gaussian smoothing of the map (0 disables it).
        top_k: Image score = mean of the ``top_k`` highest map pixels; ``None`` = the maximum.
    """

    def __init__(self, fusion_weight: float = 0.5, sigma: float = 4.0, top_k: int | None = None) -> None:
        super().__init__()
        self.fusion_weight = fusion_weight
        self.top_k = top_k
        self.blur = SeparableGaussianBlur(sigma) if sigma > 0 else nn.Identity()

    def forward(
        self,
        features: Sequence[torch.Tensor],
        prior_reconstruction: Sequence[torch.Tensor] | None,
        self_reconstruction: Sequence[torch.Tensor],
        image_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(anomaly_map (B, 1, H, W), score (B,))``."""
        anomaly_map = torch.zeros(features[0].shape[0], 1, *image_size, device=features[0].device)
        for index, target in enumerate(features):
            fused = self_reconstruction[index]
            if prior_reconstruction is not None:
                fused = self.fusion_weight * prior_reconstruction[index] + (1 - self.fusion_weight) * fused
            distance = 1 - F.cosine_similarity(target, fused, dim=1).unsqueeze(1)
            anomaly_map = anomaly_map + F.interpolate(distance, size=image_size, mode="bilinear", align_corners=False)
        anomaly_map = self.blur(anomaly_map)
        return anomaly_map, self.image_score(anomaly_map)

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image score ``(B,)``: the map's maximum, or the mean of its ``top_k`` highest pixels."""
        flat = anomaly_map.flatten(1)
        return flat.amax(dim=1) if self.top_k is None else flat.topk(self.top_k, dim=1).values.mean(dim=1)
