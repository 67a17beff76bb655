# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Per-class memory of normal patch vectors (PatchCore's memory bank, one per product class).

It keeps what PatchCore keeps of a class -- a greedy k-center coreset of all its images' locally aggregated patch
vectors -- and scores a location by the distance to its nearest memory patch of the retrieved class. It is held per
class, so a query is only ever compared with its own class, and it lives in buffers, so exports contain it.

All classes' patches are held in one ``(N, C)`` buffer with each row's class: no padding, and a query is compared
with its own class's rows only (the others are pushed out of reach).

A memory serves beside a network's own map (:mod:`~anomalib_pnpt.models.memory.fusion`). Two maps can only be added
on one scale, so such a class keeps some of its normal images out of its memory and records how far they lie from it
(:attr:`ClassPatchMemory.normal_scales`): the memory's distance on normal images of that class, measured on images
it does not contain, as a test image is. Once measured, those images may join the memory (``keep_held_out``), so
that it holds all the class's images, as PatchCore's does.

Example:
    >>> import torch
    >>> memory = ClassPatchMemory(sampling_ratio=0.5)
    >>> memory.set_class(0, torch.rand(4, 8, 3, 3))  # 36 patch vectors, half of them kept
    18
    >>> features = memory.local_patches(torch.rand(2, 8, 3, 3))
    >>> memory.nearest_patches(features, torch.zeros(2, dtype=torch.long)).shape
    torch.Size([2, 8, 3, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.backbones import joined_maps
from anomalib_pnpt.coreset import FastKCenterGreedy
from anomalib_pnpt.data_sized_buffers import DataSizedBuffers
from anomalib_pnpt.nearest_patch import nearest_patch_map
from anomalib_pnpt.prompt_pool import is_tracing


class ClassPatchMemory(DataSizedBuffers):
    """Coreset of each class's locally aggregated normal patch vectors: ``patches (N, C)``, ``patch_classes (N,)``.

    Args:
        sampling_ratio: Share of a class's patch vectors kept (PatchCore's coreset ratio).
        aggregation: Side of the average pooling that makes a patch vector "locally aware" (PatchCore: 3; 1 = none).
        per_layer: Where that pooling happens (:meth:`patch_features`): on each backbone map at its own resolution
            before the maps are resized and joined (PatchCore's order), or, ``False``, on the joined maps.
    """

    def __init__(self, sampling_ratio: float = 0.1, aggregation: int = 3, per_layer: bool = False) -> None:
        super().__init__()
        if not 0 < sampling_ratio <= 1:
            msg = f"sampling_ratio must be in (0, 1], got {sampling_ratio}."
            raise ValueError(msg)
        self.sampling_ratio = sampling_ratio
        self.aggregation = aggregation
        self.per_layer = per_layer
        self.register_buffer("patches", torch.zeros(0, 0))
        self.register_buffer("patch_classes", torch.zeros(0, dtype=torch.long))
        # Per class index: the largest distance of a held-out normal patch to the class's memory (1: none measured).
        self.register_buffer("normal_scales", torch.zeros(0))

    def sizes(self, num_classes: int) -> list[int]:
        """Memory patches of each of the first ``num_classes`` classes (0 for a class without memory)."""
        return torch.bincount(self.patch_classes.cpu(), minlength=num_classes)[:num_classes].tolist()

    def patch_features(self, maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The features a memory is made of and queried with: backbone ``maps`` resized to ``size`` and joined.

        With ``per_layer`` each map is first averaged over its own 3 x 3 neighbourhood (PatchCore: a coarse map's
        neighbourhood spans more of the image than a fine one's) and resized as PatchCore does (bilinear, corners not
        aligned); :meth:`local_patches` then leaves the joined vectors as they are. Otherwise the maps are resized
        with corners aligned and joined, and the neighbourhood is averaged on the joined grid.

        Args:
            maps: ``(B, C_i, h_i, w_i)`` backbone maps.
            size: The memory's patch grid ``(h, w)``.

        Returns:
            ``(B, sum C_i, h, w)``.
        """
        if self.per_layer:
            return joined_maps([self._neighbourhood_mean(m) for m in maps], size, align_corners=False)
        return joined_maps(maps, size)

    def local_patches(self, features: torch.Tensor) -> torch.Tensor:
        """Each location averaged with its neighbours, zero padding counted, ``(B, C, h, w)``.

        Without ``per_layer``; with it, the maps were averaged before they were joined (:meth:`patch_features`).

        As PatchCore's ``AvgPool2d(3, 1, 1)``: border locations are pulled towards zero, which damps the distances
        of the most variable part of an image, its border. On magnetic_tile (OneNIP's Lite2 features, coreset 0.1)
        averaging over the locations inside only gave image AUROC 88.4 against 93.8 (``benchmarks/FINDINGS.md``).
        """
        return features if self.per_layer else self._neighbourhood_mean(features)

    def _neighbourhood_mean(self, features: torch.Tensor) -> torch.Tensor:
        if self.aggregation <= 1:
            return features
        side = self.aggregation
        return F.avg_pool2d(features, side, stride=1, padding=side // 2, count_include_pad=True)

    @torch.no_grad()
    def set_class(
        self,
        index: int,
        features: torch.Tensor,
        held_out: torch.Tensor | None = None,
        keep_held_out: bool = False,
    ) -> int:
        """Make class ``index``'s memory from feature maps of its normal images (replaces what it had).

        Args:
            index: Class index.
            features: ``(N, C, h, w)`` :meth:`patch_features` of the class's images.
            held_out: ``(M, C, h, w)`` features of other normal images of the class, kept out of the memory: their
                largest distance to it becomes the class's :attr:`normal_scales` entry (else 1).
            keep_held_out: Once that scale is measured, make the memory again from all ``N + M`` images, as
                PatchCore's holds all of a class's images (a second coreset; the scale, measured on a memory that
                lacked the held-out images, is then a little high, the same way for every class).

        Returns:
            The number of patch vectors kept.
        """
        self._store_class(index, self._coreset(features))
        scales = self.normal_scales.to(features.device)
        if len(scales) <= index:
            scales = torch.cat([scales, scales.new_ones(index + 1 - len(scales))])
        scales[index] = 1.0
        if held_out is not None and len(held_out):
            # In chunks: a distance matrix of every held-out location against every memory patch is large.
            scales[index] = max(
                float(self.distances(chunk, torch.full((len(chunk),), index, device=chunk.device)).amax())
                for chunk in held_out.to(features.device).split(8)
            )
            if keep_held_out:
                self._store_class(index, self._coreset(torch.cat([features, held_out.to(features.device)])))
        self.normal_scales = scales
        return int((self.patch_classes == index).sum())

    def _coreset(self, features: torch.Tensor) -> torch.Tensor:
        """The ``sampling_ratio`` coreset of the locally aggregated patch vectors of ``features``, ``(K, C)``."""
        vectors = self.local_patches(features).permute(0, 2, 3, 1).reshape(-1, features.shape[1]).float()
        count = max(1, round(self.sampling_ratio * len(vectors)))
        if count < len(vectors):
            # A class's memory must not depend on what ran before: the sampler's random projection gets a seed (its
            # public ``random_state``, else numpy's global generator) and its first centre, drawn from torch's
            # global generator, a fixed seed on a forked generator (the caller's state is untouched).
            chosen = FastKCenterGreedy(vectors.cpu(), sampling_ratio=count / len(vectors), progress_every_s=0)
            chosen.model.random_state = 0
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                indices = chosen.select_coreset_idxs()
            vectors = vectors[torch.as_tensor(indices, device=vectors.device)]
        return vectors

    def _store_class(self, index: int, vectors: torch.Tensor) -> None:
        """Replace class ``index``'s rows of the memory by ``vectors``."""
        keep = self.patch_classes != index
        patches = (
            self.patches[keep].to(vectors.device) if self.patches.numel() else vectors.new_zeros(0, vectors.shape[1])
        )
        classes = self.patch_classes[keep].to(vectors.device)
        self.patches = torch.cat([patches, vectors])
        self.patch_classes = torch.cat([classes, torch.full((len(vectors),), index, device=vectors.device)])

    @torch.no_grad()
    def remove_class(self, index: int) -> None:
        """Delete class ``index``'s patches; later classes move up one index."""
        keep = self.patch_classes != index
        classes = self.patch_classes[keep]
        self.patches, self.patch_classes = self.patches[keep], classes - (classes > index).long()
        if index < len(self.normal_scales):
            self.normal_scales = torch.cat([self.normal_scales[:index], self.normal_scales[index + 1 :]])

    def clear(self) -> None:
        """Forget every class (the pool was rebuilt by training: its classes are the network's)."""
        self.patches, self.patch_classes = self.patches.new_zeros(0, 0), self.patch_classes.new_zeros(0)
        self.normal_scales = self.normal_scales.new_zeros(0)

    def nearest_patches(self, local_features: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Each location of ``local_features`` replaced by its nearest (L2) memory patch of its image's class.

        A class without memory patches (a trained one) gets another class's: its scores are meaningless and must
        be routed away.

        Args:
            local_features: ``(B, C, h, w)`` aggregated query features (:meth:`local_patches`).
            class_ids: ``(B,)`` the retrieved class of every image.

        Returns:
            ``(B, C, h, w)``.
        """
        if self.patches.numel() == 0:  # no class has a memory: nothing is routed here
            return local_features
        if not is_tracing():
            return self._nearest_patches_per_class(local_features, class_ids)
        # An exported graph cannot pick a class's rows (their count depends on the data): it compares every
        # location with every class's patches and puts the other classes' out of reach.
        other_class = self.patch_classes[None, :] != class_ids[:, None]  # (B, N)
        return nearest_patch_map(local_features, self.patches, other_class)

    def _nearest_patches_per_class(self, local_features: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """:meth:`nearest_patches` searching only each image's own class's rows (eager).

        The same result as the exported graph's search with a third of its work when there are three classes.
        """
        # The memory's dtype, as the masked search returns (under autocast the queries may be bfloat16).
        nearest = local_features.new_empty(local_features.shape, dtype=self.patches.dtype)
        for class_id in class_ids.unique().tolist():
            images = class_ids == class_id
            rows = self.patch_classes == class_id
            if rows.any():
                nearest[images] = nearest_patch_map(local_features[images], self.patches[rows])
            else:  # a class without memory patches: another class's, as in the exported graph (see above)
                other_class = (self.patch_classes != class_id).expand(int(images.sum()), -1)
                nearest[images] = nearest_patch_map(local_features[images], self.patches, other_class)
        return nearest

    def distances(self, features: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """L2 distance of each aggregated location to its nearest memory patch of its image's class.

        Args:
            features: ``(B, C, h, w)`` :meth:`patch_features` of the queries (:meth:`local_patches` is applied here).
            class_ids: ``(B,)`` the retrieved class of every image.

        Returns:
            ``(B, 1, h, w)``.
        """
        # In float32 even under autocast: |p|^2 - 2 q.p cancels, and bfloat16 would lose the nearest patch.
        with torch.autocast(features.device.type, enabled=False):
            local = self.local_patches(features.float())
            return (local - self.nearest_patches(local, class_ids)).pow(2).sum(dim=1, keepdim=True).sqrt()
