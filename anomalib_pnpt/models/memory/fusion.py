# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A per-class patch memory's map fused into a trained network's (beyond both papers).

Both networks reconstruct features and score the difference; PatchCore instead keeps each class's normal patches
(:class:`~anomalib_pnpt.models.memory.class_memory.ClassPatchMemory`) and scores the distance to the nearest one.
The two see different things (a stride-16 network misses thin defects a stride-8 memory finds; the memory has no
notion of a part's context), so the map of the retrieved class's memory is added to the network's:

    ``S = (1 - w) S_net + w * s * S_mem / m_c``        (``w``: ``map_weight``)

``S_mem`` is the distance to the nearest memory patch of the class, divided by its largest value on normal images
of that class held out of the memory (``m_c``, :attr:`ClassPatchMemory.normal_scales`) and brought to the network's
normal range ``s`` (the largest ``S_net`` on normal training images, :attr:`MemoryFusion.network_scale`). The image
score is the network's image score of the same sum at its own weight ``w_s`` (``score_weight``): whether an image
is defective and where the defect lies need not want the same mix. A class the network never trained on (added
after training) is scored by its memory alone.

Example:
    >>> import torch
    >>> fusion = MemoryFusion(out_channels=[8, 16], layers=[1], stride=8, map_weight=0.5)
    >>> maps = [torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4)]  # a backbone's maps of two 32 px images
    >>> fusion.class_memory.set_class(0, fusion.features(maps, (32, 32)))  # 10 % of 2 x 4 x 4 patch vectors
    3
    >>> fusion.memory_map(fusion.features(maps, (32, 32)), torch.zeros(2, dtype=torch.long), (32, 32)).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.data.items import PromptedPrediction
from anomalib_pnpt.models.memory.class_memory import ClassPatchMemory
from anomalib_pnpt.prompt_pool import PromptPool


class MemoryFusion(nn.Module):
    """Every class's patch memory and its fusion with a network's map.

    Args:
        out_channels: Channels of each map the network's backbone returns.
        layers: Positions in those maps whose maps make the memory's patch vectors.
        stride: Stride of the memory's patch grid (the maps are resized to it; PatchCore's is 8).
        sampling_ratio: Coreset share of a class's patch vectors kept.
        map_weight: ``w`` of the fused map.
        score_weight: ``w_s`` of the map the image score is taken from.
    """

    def __init__(
        self,
        out_channels: Sequence[int],
        layers: Sequence[int],
        stride: int = 8,
        sampling_ratio: float = 0.1,
        map_weight: float = 0.25,
        score_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not layers or not set(layers) <= set(range(len(out_channels))):
            msg = f"memory layers must be positions in the backbone's maps (0 to {len(out_channels) - 1}): {layers}."
            raise ValueError(msg)
        for name, weight in (("map_weight", map_weight), ("score_weight", score_weight)):
            if not 0 <= weight <= 1:
                msg = f"{name} must be in [0, 1], got {weight}."
                raise ValueError(msg)
        self.layers = list(layers)
        self.stride = stride
        self.map_weight = map_weight
        self.score_weight = score_weight
        self.features_dim = sum(out_channels[i] for i in self.layers)
        # PatchCore's order: each map averaged over its own 3 x 3 neighbourhood, then resized and joined.
        self.class_memory = ClassPatchMemory(sampling_ratio=sampling_ratio, per_layer=True)
        # s: the network's largest map value on normal training images (calibrated by the module).
        self.register_buffer("network_scale", torch.tensor(1.0))

    def features(self, maps: Sequence[torch.Tensor], image_size: Sequence[int]) -> torch.Tensor:
        """The memory's patch features ``(B, C_m, H / stride, W / stride)`` from the backbone's ``maps``."""
        size = (image_size[0] // self.stride, image_size[1] // self.stride)
        return self.class_memory.patch_features([maps[i] for i in self.layers], size)

    def memory_map(self, features: torch.Tensor, class_ids: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        """``S_mem``: distance of every location to its class's memory, upsampled to the image ``(B, 1, H, W)``."""
        distances = self.class_memory.distances(features, class_ids)
        return F.interpolate(distances, size=tuple(image_size), mode="bilinear", align_corners=False)

    def forward(
        self,
        prediction: PromptedPrediction,
        features: torch.Tensor,
        pool: PromptPool,
        image_score: Callable[[torch.Tensor], torch.Tensor],
    ) -> PromptedPrediction:
        """The network's prediction with the memory's map fused in (classes it never trained on: the memory's).

        Args:
            prediction: The network's raw prediction.
            features: :meth:`features` of the same images.
            pool: The network's prompt pool (which classes it trained on).
            image_score: The network's rule from a map to an image score.

        Returns:
            The fused prediction; class and similarity unchanged.
        """
        # Against the pool's class count, not the batch's classes: a data-dependent check would not export.
        if len(self.class_memory.normal_scales) < pool.num_classes:
            msg = "Every class needs its patch memory: train the model, or add the class with add_class."
            raise RuntimeError(msg)
        class_ids = prediction.class_id
        image_size = prediction.anomaly_map.shape[-2:]
        memory_map = self.memory_map(features, class_ids, image_size)
        scaled = (self.network_scale / self.class_memory.normal_scales[class_ids]).view(-1, 1, 1, 1) * memory_map
        network_map = prediction.anomaly_map
        fused = (1 - self.map_weight) * network_map + self.map_weight * scaled
        scored = (
            fused
            if self.score_weight == self.map_weight
            else ((1 - self.score_weight) * network_map + self.score_weight * scaled)
        )
        anomaly_map, score = fused, image_score(scored)
        if pool.may_hold_untrained_classes():
            anomaly_map, score = pool.route_untrained_classes(
                class_ids, (anomaly_map, score), (memory_map, image_score(memory_map))
            )
        return PromptedPrediction(score, anomaly_map, class_ids, prediction.class_similarity, prediction.unknown)


class ClassFeatures:
    """Memory features gathered per class over batches, on the CPU (a class's memory is built from all of them).

    Example:
        >>> gathered = ClassFeatures()
        >>> gathered.add(torch.tensor([1, 0, 1]), torch.rand(3, 4, 2, 2))
        >>> [(c, f.shape[0]) for c, f in gathered.per_class()]
        [(0, 1), (1, 2)]
    """

    def __init__(self) -> None:
        self.chunks: dict[int, list[torch.Tensor]] = {}

    def add(self, class_ids: torch.Tensor, features: torch.Tensor) -> None:
        """Keep ``features`` ``(B, C, h, w)`` under their classes ``(B,)``."""
        class_ids = class_ids.to(features.device)
        for class_id in class_ids.unique().tolist():
            self.chunks.setdefault(int(class_id), []).append(features[class_ids == class_id].cpu())

    def per_class(self) -> list[tuple[int, torch.Tensor]]:
        """``(class id, its features)`` in class order."""
        return [(class_id, torch.cat(chunks)) for class_id, chunks in sorted(self.chunks.items())]
