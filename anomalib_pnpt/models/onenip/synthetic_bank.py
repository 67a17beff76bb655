# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A bank of synthetic-anomaly copies of the training images and their backbone features.

OneNIP's restoration stream and refiner learn from synthetic anomalies made in IMAGE space (Sec. 3.3), so
every copy needs a backbone pass. Making a new copy of every image at every step costs about a third of a
cached training epoch on a CPU (``benchmarks/epoch_profile.py`` measures it). The
paper is silent on how often a copy must change. This bank keeps each image's copy (features and mask) and
makes a new one only after ``refresh_epochs`` epochs. So the synthesis and its backbone pass cost
``1 / refresh_epochs`` of what they cost before. ``refresh_epochs = 1`` is the paper's behaviour: a new copy
at every step. Entries are keyed like the clean-feature cache (file, size, modification time, backbone,
input shape), so an edited image or another backbone never reuses a stale copy.

Example:
    >>> import torch
    >>> bank = SyntheticCopyBank(backbone_id="lite2:0,1,2,3", refresh_epochs=2)
    >>> made = []
    >>> def make(images):
    ...     made.append(len(images))
    ...     return images.mean(dim=1, keepdim=True), images[:, :1] > 0.5
    >>> images = torch.rand(2, 3, 4, 4)
    >>> _ = bank.copies(["a.png", "b.png"], images, epoch=0, make=make)
    >>> _ = bank.copies(["a.png", "b.png"], images, epoch=1, make=make)  # still fresh: reused
    >>> _ = bank.copies(["a.png", "b.png"], images, epoch=2, make=make)  # two epochs old: made again
    >>> made
    [2, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from anomalib_pnpt.feature_cache import image_key


class SyntheticCopyBank:
    """Per training image: its synthetic copy's features and mask, and the epoch the copy was made.

    Args:
        backbone_id: Identity of the feature extractor (part of the key).
        refresh_epochs: Epochs a copy is reused before a new one is made (1: a new copy at every step).
        max_items: Keep at most this many images' copies (memory bound; beyond it copies are made at
            every step, as without the bank). ``None`` = unbounded.
    """

    def __init__(self, backbone_id: str, refresh_epochs: int, max_items: int | None = None) -> None:
        if refresh_epochs < 1:
            msg = f"refresh_epochs must be at least 1, got {refresh_epochs}."
            raise ValueError(msg)
        self.backbone_id = backbone_id
        self.refresh_epochs = refresh_epochs
        self.max_items = max_items
        self._store: dict[tuple, tuple[int, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def copies(
        self,
        paths: Sequence[str],
        images: torch.Tensor,
        epoch: int,
        make: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and masks of the synthetic copies of ``images``, making only the missing or stale ones.

        Args:
            paths: Source file of every image (the key).
            images: Pre-processed clean images ``(B, 3, H, W)``.
            epoch: The current training epoch.
            make: Makes synthetic copies of images and returns ``(features, masks)`` of those copies.

        Returns:
            ``(features (B, C, h, w), masks (B, 1, H, W))`` on the images' device.
        """
        if self.refresh_epochs == 1:  # the paper's behaviour: nothing to keep
            return make(images)
        keys = [image_key(path, self.backbone_id, images.shape[1:]) for path in paths]
        stale = [i for i, key in enumerate(keys) if self._age(key, epoch) >= self.refresh_epochs]
        fresh = {}
        if stale:
            features, masks = make(images[stale])
            fresh = dict(zip(stale, zip(features, masks, strict=True), strict=True))
        entries = []
        for index, key in enumerate(keys):
            if index in fresh:
                entry = (epoch, fresh[index][0].detach().cpu(), fresh[index][1].detach().cpu())
                if key in self._store or self.max_items is None or len(self._store) < self.max_items:
                    self._store[key] = entry
            else:
                entry = self._store[key]
            entries.append(entry)
        return self._stack(entries, images.device)

    def _age(self, key: tuple, epoch: int) -> float:
        """Epochs since the stored copy was made (infinite when there is none)."""
        return epoch - self._store[key][0] if key in self._store else float("inf")

    @staticmethod
    def _stack(entries: list[tuple[int, torch.Tensor, torch.Tensor]], device: torch.device) -> tuple:
        features = torch.stack([entry[1] for entry in entries]).to(device)
        masks = torch.stack([entry[2] for entry in entries]).to(device)
        return features, masks
