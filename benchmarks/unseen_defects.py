# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Synthetic defects that neither model trained on: scratches, stains and holes, for choosing settings.

OneNIP's refiner and restoration stream, and PNPT's ``restoration_weight``, train on CutPaste and DTD-texture defects
(``anomalib_pnpt/synthetic_anomalies.py``), so a setting chosen on those very defects leans to the
network; CutPaste also moves the image's own normal patches, which a patch memory cannot see by construction. These
kinds come from neither generator and look like common industrial defects:

- scratch: a thin (1-3 % of the side) straight stroke, 10-35 % of the side long, blended 40-80 % towards dark
  (0.1) or bright (0.9);
- stain: a soft ellipse (radii 4-12 % of the side) whose brightness is scaled by 0.55-0.8 or 1.25-1.6;
- hole: a small disk (radius 2-5 % of the side) darkened to 20-50 % of its brightness.

Each copy's kind is drawn at random (uniformly) by the generator's own seeded random numbers.

Images come in and go out normalised (``mean``/``std``), as with the training generator.

Example:
    >>> import torch
    >>> generator = UnseenDefects(seed=0)
    >>> images = torch.zeros(2, 3, 64, 64)
    >>> bool((generator(images) != images).any(dim=(1, 2, 3)).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

KINDS = ("scratch", "stain", "hole")


class UnseenDefects:
    """Make one defective copy of every image, of a random kind (scratch, stain or hole).

    Args:
        mean: Channel mean of the images' normalisation.
        std: Channel standard deviation of the images' normalisation.
        seed: Seed of the generator's own random numbers (the copies are the same on every run).
    """

    def __init__(
        self, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5), seed: int = 0
    ) -> None:
        self.mean = torch.tensor(list(mean)).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std)).view(1, 3, 1, 1)
        self.random = torch.Generator().manual_seed(seed)

    def _uniform(self, low: float, high: float) -> float:
        return float(low + (high - low) * torch.rand(1, generator=self.random))

    def _mask(self, kind: str, size: int) -> torch.Tensor:
        """A soft mask ``(size, size)`` in [0, 1] of one defect of this kind at a random place."""
        grid = torch.arange(size, dtype=torch.float32)
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        cy, cx = self._uniform(0.2, 0.8) * size, self._uniform(0.2, 0.8) * size
        if kind == "scratch":
            angle = self._uniform(0, math.pi)
            half_length = self._uniform(0.05, 0.175) * size
            half_width = self._uniform(0.005, 0.015) * size + 0.5
            cos, sin = math.cos(angle), math.sin(angle)
            along = (x - cx) * cos + (y - cy) * sin
            across = -(x - cx) * sin + (y - cy) * cos
            return ((along.abs() <= half_length) & (across.abs() <= half_width)).float()
        if kind == "stain":
            ry, rx = self._uniform(0.04, 0.12) * size, self._uniform(0.04, 0.12) * size
            distance = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
            return torch.exp(-(distance**2)).clamp(0, 1)  # flat centre, soft edge
        radius = self._uniform(0.02, 0.05) * size
        return (((y - cy) ** 2 + (x - cx) ** 2) <= radius**2).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Defective copies ``(B, 3, H, W)`` of normalised square images ``(B, 3, H, W)``."""
        return self.copies_and_masks(images)[0]

    def copies_and_masks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Defective copies ``(B, 3, H, W)`` and their defects' masks ``(B, H, W)`` (bool).

        A pixel is defective where the soft mask is at least 0.5 (a stain's soft edge beyond it is not).
        The copies are the same as :meth:`__call__`'s for the same seed.
        """
        pixels = images.cpu() * self.std + self.mean
        outputs, masks = [], []
        for image in pixels:
            kind = KINDS[int(torch.randint(len(KINDS), (1,), generator=self.random))]
            mask = self._mask(kind, image.shape[-1])
            if kind == "scratch":
                tone = torch.full_like(image, 0.1 if torch.rand(1, generator=self.random) < 0.5 else 0.9)
                alpha = self._uniform(0.4, 0.8)
                target = alpha * tone + (1 - alpha) * image
            elif kind == "stain":
                dark = torch.rand(1, generator=self.random) < 0.5
                target = (image * (self._uniform(0.55, 0.8) if dark else self._uniform(1.25, 1.6))).clamp(0, 1)
            else:
                target = image * self._uniform(0.2, 0.5)
            outputs.append((1 - mask) * image + mask * target)
            masks.append(mask >= 0.5)
        return ((torch.stack(outputs) - self.mean) / self.std).to(images.device), torch.stack(masks).to(images.device)
