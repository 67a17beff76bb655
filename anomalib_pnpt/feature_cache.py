# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""In-memory cache of frozen-backbone features of training images.

The backbone is frozen and PNPT uses no training augmentation, so an image's features never change
between epochs; computing them once instead of every epoch is the largest training-speed lever on a
CPU (the backbone costs more than the transformer at small batch sizes). Entries are keyed by the
image's path, size and modification time, the backbone's identity (name and layers) and the input
tensor's shape, so another backbone, input size or an edited image never reuses a stale entry.

Example:
    >>> import torch
    >>> cache = FeatureCache(backbone_id="lite2:1,2,3")
    >>> calls = []
    >>> def extract(x):
    ...     calls.append(len(x))
    ...     return [x.mean(dim=1, keepdim=True)]
    >>> images = torch.rand(2, 3, 4, 4)
    >>> first = cache.features(["a.png", "b.png"], images, extract)
    >>> second = cache.features(["a.png", "b.png"], images, extract)
    >>> calls
    [2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch


class FeatureCache:
    """Map from (image file, backbone, input shape) to that image's feature maps, kept on the CPU.

    Args:
        backbone_id: Identity of the feature extractor (name + layers + weights source).
        max_items: Stop adding entries beyond this many images (memory bound); ``None`` = unbounded.
    """

    def __init__(self, backbone_id: str, max_items: int | None = None) -> None:
        self.backbone_id = backbone_id
        self.max_items = max_items
        self._store: dict[tuple, list[torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def key(self, path: str, image_shape: Sequence[int]) -> tuple:
        """Cache key of one image file as the given tensor shape."""
        try:
            stat = Path(path).stat()
            file_id = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
        except OSError:
            file_id = (path, -1, -1)
        return (*file_id, self.backbone_id, tuple(image_shape))

    def features(
        self,
        paths: Sequence[str],
        images: torch.Tensor,
        extract: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        """Return the feature maps of ``images``, computing only those not cached.

        Args:
            paths: Source file of every image in the batch.
            images: Pre-processed images ``(B, 3, H, W)``.
            extract: The frozen feature extractor.

        Returns:
            Feature maps, on the images' device.
        """
        keys = [self.key(path, images.shape[1:]) for path in paths]
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = extract(images[missing])
            for row, index in enumerate(missing):
                if self.max_items is None or len(self._store) < self.max_items:
                    self._store[keys[index]] = [level[row].detach().cpu() for level in computed]
        stored = [self._store.get(key) for key in keys]
        if any(entry is None for entry in stored):  # cache full: fall back to computing the whole batch
            return extract(images)
        return [torch.stack([entry[level] for entry in stored]).to(images.device) for level in range(len(stored[0]))]
