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

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def image_key(path: str, backbone_id: str, image_shape: Sequence[int]) -> tuple:
    """Key of what a training image's features depend on: its file, the feature extractor, the input shape.

    The file counts by path, size and modification time; any change gives another key, so nothing stale is reused.

    Args:
        path: The image file.
        backbone_id: Identity of the feature extractor (name + layers + weights source).
        image_shape: Shape of the pre-processed image tensor.

    Returns:
        A hashable key.
    """
    try:
        stat = Path(path).stat()
        file_id = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        file_id = (path, -1, -1)
    return (*file_id, backbone_id, tuple(image_shape))


class FeatureCache:
    """Map from (image file, backbone, input shape) to that image's feature maps, kept on the CPU.

    Beyond its memory bound the cache stops growing and says so once: the images it could not keep are
    computed at every epoch, as without a cache (slower, never wrong).

    Args:
        backbone_id: Identity of the feature extractor (name + layers + weights source).
        max_items: Stop adding entries beyond this many images; ``None`` = no count bound.
        max_mb: Stop adding entries beyond this many MiB of feature maps; ``None`` = no size bound. WRN50
            layers 1-3 at 256 px take ~7 MiB per image, EfficientNet-Lite2 blocks 1-3 ~0.7 MiB.
    """

    def __init__(self, backbone_id: str, max_items: int | None = None, max_mb: float | None = None) -> None:
        self.backbone_id = backbone_id
        self.max_items = max_items
        self.max_mb = max_mb
        self._store: dict[tuple, list[torch.Tensor]] = {}
        self._bytes = 0
        self._warned_full = False
        self.hits = 0
        self.misses = 0

    @property
    def megabytes(self) -> float:
        """Memory held by the cached feature maps, in MiB."""
        return self._bytes / 2**20

    def _has_room(self, entry: list[torch.Tensor]) -> bool:
        size = sum(level.numel() * level.element_size() for level in entry)
        fits = (self.max_items is None or len(self._store) < self.max_items) and (
            self.max_mb is None or (self._bytes + size) / 2**20 <= self.max_mb
        )
        if fits:
            self._bytes += size
        elif not self._warned_full:
            self._warned_full = True
            logger.warning(
                "Feature cache full at %d images (%.0f MiB; bound: %s images, %s MiB): the features of the other "
                "training images are computed at every epoch. Raise the bound (feature_cache_mb) if memory allows.",
                len(self._store),
                self.megabytes,
                self.max_items,
                self.max_mb,
            )
        return fits

    def __len__(self) -> int:
        return len(self._store)

    def key(self, path: str, image_shape: Sequence[int]) -> tuple:
        """Cache key of one image file as the given tensor shape."""
        return image_key(path, self.backbone_id, image_shape)

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
                entry = [level[row].detach().cpu() for level in computed]
                if self._has_room(entry):
                    self._store[keys[index]] = entry
        stored = [self._store.get(key) for key in keys]
        if any(entry is None for entry in stored):  # cache full: fall back to computing the whole batch
            return extract(images)
        return [torch.stack([entry[level] for entry in stored]).to(images.device) for level in range(len(stored[0]))]
