# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Unknown-class detection: an image of a product the model does not know is never judged by another's prior.

Retrieval always returns the nearest known class; its prior (PNPT) or prompt (OneNIP) is then used as if the
image were of that class, and that class's calibration decides. An image of a product the model never saw
(another product, or a variant of a known one in another colour, size or shape) would be scored against the
wrong normality and could pass as a confident normal.

The rule compares an image with the TRAINING images of the class it was retrieved as: its retrieval key's
cosine similarity to the class's nearest training key. The bound of class ``c`` is the least similarity of one
of ``c``'s training images to its nearest OTHER training image of ``c`` (leave-one-out): every training image
fits it, and it has no free parameter. An image below it is "unknown class": reported as such and labelled
anomalous (a line that must stop does), with score 1. A class with fewer than two training images has no
bound (NaN: never unknown).

How often it flags a normal image of a known class follows from the rule alone: a new image drawn like the class's
``N`` training images (and retrieved as its class) is flagged only if its nearest-neighbour similarity is below every
training image's, which makes it the least typical of ``N + 1`` exchangeable images: at most ``1 / (N + 1)`` of them
(100 training images: under 1 %; 25: up to 4 %).

Chosen on images that are not in any test set (``benchmarks/unknown_products.py``: selection halves of every
group), over a class-mean midpoint rule, the class's own validation images, and a Mahalanobis rule: it is the
only one that flagged every left-out product, foreign texture, logical tray and variant there while flagging
almost no known normal image.

The keys (``N x D``, every training image's) live in buffers, so checkpoints and exported graphs carry them; in
a graph the rule is one matrix product, a mask by the retrieved class, a maximum and a comparison.

Example:
    >>> import torch
    >>> bound = UnknownClassBound()
    >>> keys = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> bound.fit(keys, torch.tensor([0, 0, 1, 1]))
    >>> [round(v, 3) for v in bound.bounds.tolist()]
    [0.994, 0.994]
    >>> bound(torch.tensor([0, 1]), torch.tensor([[1.0, 0.05], [0.6, 0.8]]))[1].tolist()
    [False, True]
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.data_sized_buffers import DataSizedBuffers


class UnknownClassBound(DataSizedBuffers):
    """Every training image's retrieval key by class, and per class the least leave-one-out nearest similarity.

    Buffers: ``keys (N, D)`` (unit length), ``key_classes (N,)`` and ``bounds (C,)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(0, 0))
        self.register_buffer("key_classes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("bounds", torch.zeros(0))

    @property
    def num_classes(self) -> int:
        """Classes with a (possibly NaN) bound; 0 before fitting."""
        return int(self.bounds.numel())

    @staticmethod
    def _bound(keys: torch.Tensor) -> float:
        """The least similarity of one of ``keys`` (unit length) to its nearest other; NaN for fewer than two."""
        if len(keys) < 2:
            return float("nan")
        similarity = keys @ keys.T
        similarity.fill_diagonal_(-2.0)  # below any cosine: an image is not its own neighbour
        return float(similarity.amax(dim=1).min())

    @torch.no_grad()
    def fit(self, keys: torch.Tensor, class_ids: torch.Tensor, num_classes: int | None = None) -> None:
        """Keep every training image's key and fit every class's bound.

        Args:
            keys: ``(N, D)`` retrieval keys of the training images.
            class_ids: ``(N,)`` their classes.
            num_classes: Number of classes (default: the largest id + 1); a class with no image has no bound.
        """
        class_ids = class_ids.reshape(-1).long().to(keys.device)
        num_classes = num_classes or int(class_ids.max()) + 1
        keys = F.normalize(keys.float(), dim=-1)
        # A canonical order (by class, then by the first coordinate): the buffers do not depend on the order the
        # images came in, e.g. gathered rank by rank under DDP.
        order = torch.argsort(keys[:, 0], stable=True) if len(keys) else torch.zeros(0, dtype=torch.long)
        order = order[torch.argsort(class_ids[order], stable=True)]
        keys, class_ids = keys[order], class_ids[order]
        bounds = [self._bound(keys[class_ids == c]) for c in range(num_classes)]
        device = self.bounds.device
        self.keys, self.key_classes = keys.to(device), class_ids.to(device)
        self.bounds = torch.tensor(bounds, device=device)

    @torch.no_grad()
    def append(self, keys: torch.Tensor) -> None:
        """Add one more class (the last index) from its training images' keys.

        Args:
            keys: ``(N, D)`` retrieval keys of the new class's images.
        """
        device = self.bounds.device
        keys = F.normalize(keys.float(), dim=-1).to(device)
        index = self.num_classes
        self.keys = torch.cat([self.keys, keys]) if self.keys.numel() else keys
        self.key_classes = torch.cat([self.key_classes, torch.full((len(keys),), index, device=device)])
        self.bounds = torch.cat([self.bounds, torch.tensor([self._bound(keys)], device=device)])

    @torch.no_grad()
    def remove(self, index: int) -> None:
        """Drop class ``index``'s keys and bound; later classes move up."""
        keep = self.key_classes != index
        self.keys = self.keys[keep]
        self.key_classes = self.key_classes[keep] - (self.key_classes[keep] > index).long()
        self.bounds = torch.cat([self.bounds[:index], self.bounds[index + 1 :]])

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's similarity to the nearest training image of its retrieved class, and whether it is below.

        Args:
            class_ids: ``(B,)`` retrieved classes.
            keys: ``(B, D)`` the images' retrieval keys.

        Returns:
            ``(similarity (B,), unknown (B,) bool)``; never unknown before fitting or where the bound is NaN.
        """
        class_ids = class_ids.reshape(-1).long()
        if self.keys.numel() == 0:  # not fitted (a model used before its pool was built)
            return torch.full_like(class_ids, float("nan"), dtype=keys.dtype), torch.zeros_like(class_ids).bool()
        similarity = F.normalize(keys.float(), dim=-1) @ self.keys.T
        same_class = self.key_classes.unsqueeze(0) == class_ids.unsqueeze(1)
        nearest = torch.where(same_class, similarity, torch.full_like(similarity, -2.0)).amax(dim=1)
        bound = self.bounds[class_ids.clamp(0, self.num_classes - 1)]
        return nearest, nearest < bound  # NaN bound: False
