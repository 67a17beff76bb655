# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A per-class patch memory fused into a trained network's anomaly map (beyond both papers; ``memory_weight``).

Both networks reconstruct features and score the difference; PatchCore instead keeps each class's normal patches
(:class:`~anomalib_pnpt.patch_memory.ClassPatchMemory`) and scores the distance to the nearest one. The two see
different things (OneNIP at stride 16 misses thin defects a stride-8 memory finds; the memory has no notion of a
part's context), so a trained model can add the memory's map of the retrieved class to its own:

    ``S = (1 - w) S_net + w * s * S_mem / m_c``        (``w``: ``memory_weight``)

``S_mem`` is the distance to the nearest memory patch of the class, divided by its largest value on normal images
of that class held out of the memory (``m_c``, :attr:`~anomalib_pnpt.patch_memory.ClassPatchMemory.normal_scales`)
and brought to the network's normal range ``s`` (the largest ``S_net`` on normal training images, calibrated by
the model). ``w = 0`` is the paper's model.

The image score may take its own weight ``w_s`` (``memory_score_weight``; by default ``w``): the score is the
model's image score of ``(1 - w_s) S_net + w_s * s * S_mem / m_c`` while the map stays at ``w``. Image and pixel
figures need not want the same mix: the memory alone decides best whether an image is defective while the
networks' maps add to the defects' outlines (``benchmarks/results/README.md``, sessions 25-27).

Two owners share the work:
- :class:`MemoryFusedNetwork`, mixed into a torch model with a ``feature_extractor``: the memory's settings and
  buffers, its features (``memory_layers`` at ``memory_stride``, from the network's own backbone pass), its map and
  the fusion;
- :class:`MemoryFusedModule`, mixed into the anomalib module: every trained class's memory built from its
  training images, every ``memory_holdout``-th held out to measure ``m_c``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Net(MemoryFusedNetwork, nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.init_class_memory([8, 16], image_size=32, memory_layers=[1], memory_stride=8, memory_weight=0.5)
    >>> net = Net()
    >>> maps = [torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4)]  # the backbone's maps of two 32 px images
    >>> net.class_memory.set_class(0, net.memory_features(torch.rand(2, 3, 32, 32), maps))
    3
    >>> features = net.memory_features(torch.rand(1, 3, 32, 32), [m[:1] for m in maps])
    >>> net.memory_map(features, torch.zeros(1, dtype=torch.long), (32, 32)).shape  # S_mem, before the fusion
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.patch_memory import ClassPatchMemory
from anomalib_pnpt.prompt_pool import pool_dataloader, preprocessed_batches

logger = logging.getLogger(__name__)

MEMORY_AGGREGATIONS = ("joined", "per_layer")
"""Where the patch memory averages each location's neighbourhood: on the joined maps, or on each map first."""


class MemoryFusedNetwork:
    """Torch-model side: the patch memory's features, map and fusion.

    For a model with a ``feature_extractor`` and a ``prompt_pool``.

    Settings (:meth:`init_class_memory`):
        memory_sampling_ratio: Coreset share of a class's patch vectors kept in its memory.
        memory_layers: Positions in the backbone's ``layers`` whose maps make the memory's patch vectors
            (``None``: all).
        memory_stride: Stride of the memory's patch grid (the maps are resized to it). PatchCore keeps its memory
            at 8 (Lite2 stages 2-3 at stride 8: magnetic_tile image AUROC 96.8 against 93.8 at 16,
            ``benchmarks/FINDINGS.md``).
        memory_weight: ``w`` of the fused map (0: the network alone, the paper).
        memory_score_weight: ``w_s`` of the map the image score is taken from (``None``: ``memory_weight``); only
            with ``memory_weight > 0`` (the memory is built only then).
        memory_aggregation: How a memory patch vector takes in its neighbourhood (3 x 3 mean): ``"per_layer"``, as
            PatchCore, on each backbone map at its own resolution before the maps are resized (a stride-16 map's
            neighbourhood spans 48 px), or ``"joined"``, on the maps resized and joined (the default, which
            checkpoints made before the option was added hold).
    """

    feature_extractor: Any
    prompt_pool: Any

    def init_class_memory(  # noqa: PLR0913  (the memory's settings, each documented once, here)
        self,
        out_channels: Sequence[int],
        image_size: int | None,
        memory_layers: Sequence[int] | None = None,
        memory_stride: int = 16,
        memory_weight: float = 0.0,
        memory_sampling_ratio: float = 0.1,
        memory_aggregation: str = "joined",
        memory_score_weight: float | None = None,
    ) -> None:
        """Check the settings and make the (empty) ``class_memory``; call after ``nn.Module.__init__``.

        Args:
            out_channels: Channels of each backbone map.
            image_size: Input side (a multiple of ``memory_stride``), if the network fixes it.
            memory_layers: See the class docstring.
            memory_stride: See the class docstring.
            memory_weight: See the class docstring.
            memory_sampling_ratio: See the class docstring.
            memory_aggregation: See the class docstring.
            memory_score_weight: See the class docstring.
        """
        num_layers = len(out_channels)
        chosen = list(range(num_layers)) if memory_layers is None else list(memory_layers)
        if not chosen or not set(chosen) <= set(range(num_layers)):
            msg = f"memory_layers must be positions in layers (0 to {num_layers - 1}), got {memory_layers}."
            raise ValueError(msg)
        if image_size is not None and image_size % memory_stride:
            msg = f"image_size {image_size} must be a multiple of memory_stride {memory_stride}."
            raise ValueError(msg)
        if not 0 <= memory_weight <= 1:
            msg = f"memory_weight must be in [0, 1], got {memory_weight}."
            raise ValueError(msg)
        if memory_score_weight is not None and not 0 <= memory_score_weight <= 1:
            msg = f"memory_score_weight must be in [0, 1] or None, got {memory_score_weight}."
            raise ValueError(msg)
        if memory_weight == 0 and memory_score_weight:
            msg = "memory_score_weight > 0 needs memory_weight > 0: the patch memory is built only then."
            raise ValueError(msg)
        if memory_aggregation not in MEMORY_AGGREGATIONS:
            msg = f"memory_aggregation must be one of {MEMORY_AGGREGATIONS}, got {memory_aggregation!r}."
            raise ValueError(msg)
        self.memory_layers = chosen
        self.memory_stride = memory_stride
        self.memory_weight = memory_weight
        self.memory_score_weight = memory_weight if memory_score_weight is None else memory_score_weight
        self.memory_features_dim = sum(out_channels[i] for i in chosen)
        self.class_memory = ClassPatchMemory(
            sampling_ratio=memory_sampling_ratio, per_layer=memory_aggregation == "per_layer"
        )

    def memory_features(self, images: torch.Tensor, maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The patch memory's features: the ``memory_layers`` maps at ``memory_stride``, ``(B, C_m, h_m, w_m)``.

        Args:
            images: Pre-processed images ``(B, 3, H, W)``.
            maps: Their backbone maps, if already computed.
        """
        maps = self.feature_extractor(images) if maps is None else maps
        size = (images.shape[-2] // self.memory_stride, images.shape[-1] // self.memory_stride)
        return self.class_memory.patch_features([maps[i] for i in self.memory_layers], size)

    def memory_map(
        self, memory_features: torch.Tensor, class_ids: torch.Tensor, image_size: torch.Size | tuple[int, int]
    ) -> torch.Tensor:
        """Distance of every location to its class's memory, upsampled to the image ``(B, 1, H, W)`` (unscaled)."""
        distances = self.class_memory.distances(memory_features, class_ids)
        return F.interpolate(distances, size=tuple(image_size), mode="bilinear", align_corners=False)

    def fused_with_memory(
        self,
        anomaly_map: torch.Tensor,
        memory_map: torch.Tensor,
        class_ids: torch.Tensor,
        network_scale: torch.Tensor | float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``S = (1 - w) S_net + w * s * S_mem / m_c`` and the map the image score is taken from (at ``w_s``).

        Args:
            anomaly_map: The network's map ``S_net``.
            memory_map: :meth:`memory_map` of the same images.
            class_ids: ``(B,)`` their retrieved classes.
            network_scale: ``s``, the network's largest map value on normal training images.

        Returns:
            ``(fused map, map to score)``, each ``(B, 1, H, W)``; the same tensor when ``w_s = w``.
        """
        # Against the pool's class count, not the batch's classes: a data-dependent check would not export.
        if len(self.class_memory.normal_scales) < self.prompt_pool.num_classes:
            msg = "memory_weight > 0 needs every class's patch memory: fill_class_memory(datamodule) builds them."
            raise RuntimeError(msg)
        scaled_memory = (network_scale / self.class_memory.normal_scales[class_ids]).view(-1, 1, 1, 1) * memory_map
        fused = (1 - self.memory_weight) * anomaly_map + self.memory_weight * scaled_memory
        if self.memory_score_weight == self.memory_weight:
            return fused, fused
        score_weight = self.memory_score_weight
        return fused, (1 - score_weight) * anomaly_map + score_weight * scaled_memory


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


class MemoryFusedModule:
    """Anomalib-module side: every trained class's memory, from its training images.

    ``self.model`` is a :class:`MemoryFusedNetwork`; the module sets ``memory_holdout`` (:meth:`check_memory_holdout`)
    and ``memory_all_images`` (whether the memory is made again from all images once ``m_c`` is measured).
    """

    model: Any
    device: torch.device
    training: bool
    memory_holdout: int
    memory_all_images: bool

    @staticmethod
    def check_memory_holdout(memory_holdout: int) -> int:
        """``memory_holdout``, if at least 2 (one in that many of a class's images is held out of its memory)."""
        if memory_holdout < 2:
            msg = f"memory_holdout must be at least 2 (one in that many images is held out), got {memory_holdout}."
            raise ValueError(msg)
        return memory_holdout

    def set_trained_class_memory(self, index: int, features: torch.Tensor) -> None:
        """A trained class's memory, every ``memory_holdout``-th image held out to measure its normal range.

        With ``memory_all_images`` the memory is then made again from all the images, held-out ones included.

        Args:
            index: Class index.
            features: ``(N, C_m, h_m, w_m)`` memory features of the class's normal images.
        """
        held_out = torch.zeros(len(features), dtype=torch.bool)
        held_out[:: self.memory_holdout] = len(features) > 1  # one image alone goes to the memory (scale 1)
        start = time.perf_counter()
        features = features.to(self.device)
        kept = self.model.class_memory.set_class(
            index, features[~held_out], held_out=features[held_out], keep_held_out=self.memory_all_images
        )
        logger.info(
            "Patch memory of class %d: %d patches from %d images, normal scale %.4f (%d held-out images), %.0f s",
            index,
            kept,
            len(features) if self.memory_all_images else int((~held_out).sum()),
            float(self.model.class_memory.normal_scales[index]),
            int(held_out.sum()),
            time.perf_counter() - start,
        )

    def set_trained_class_memories(self, gathered: ClassFeatures) -> None:
        """Every gathered class's memory (:meth:`set_trained_class_memory`)."""
        for class_id, features in gathered.per_class():
            self.set_trained_class_memory(class_id, features)

    @torch.no_grad()
    def fill_class_memory(self, datamodule: Any) -> None:
        """Build every trained class's patch memory from ``datamodule``'s training images (``memory_weight > 0``).

        Training does it with the prompt pool; this is for a model trained without it, e.g. loaded with a
        ``memory_weight`` override: ``OneNip.load_from_checkpoint(path, memory_weight=0.5)``.

        Args:
            datamodule: The datamodule the model was trained on (its training images, in its class order).

        Example:
            >>> model.fill_class_memory(MultiClassMVTecAD(root="../shared/data/industrial"))  # doctest: +SKIP
        """
        was_training = self.training
        self.eval()  # type: ignore[attr-defined]
        gathered = ClassFeatures()
        for images, class_ids, _ in preprocessed_batches(pool_dataloader(datamodule.train_dataloader()), self):
            gathered.add(class_ids, self.model.memory_features(images))
        stored = self.model.class_memory.patches
        if stored.numel() and stored.shape[1] != self.model.memory_features_dim:
            logger.warning("The patch memory's features changed (memory_layers / memory_stride): rebuilt anew.")
            self.model.class_memory.clear()
        self.set_trained_class_memories(gathered)
        self.train(was_training)  # type: ignore[attr-defined]

    @torch.no_grad()
    def on_class_added(self, index: int, images: torch.Tensor, trained: bool) -> None:
        """With ``memory_weight > 0`` an added class gets its memory too, some images held out to scale it.

        Args:
            index: The new class's index.
            images: ``(N, 3, H, W)`` its pre-processed images.
            trained: Whether the network was trained with the class.
        """
        del trained  # the fusion needs every class's memory, trained or not
        if self.model.memory_weight > 0:
            self.set_trained_class_memory(index, self.memory_features_of(images))

    def on_class_removed(self, index: int) -> None:
        """Its patch memory goes with the class."""
        self.model.class_memory.remove_class(index)

    def memory_features_of(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Memory features of pre-processed ``images``, ``batch_size`` at a time."""
        return torch.cat([self.model.memory_features(chunk) for chunk in images.split(batch_size)])
