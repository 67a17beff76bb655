# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Unknown-class detection: an image of a product the model does not know is never judged by another's prior.

Retrieval always returns the nearest known class; its prior (PNPT) or prompt (OneNIP) is then used as if the
image were of that class, and the calibration of that class decides. An image of a product the model never
saw would be scored against the wrong normality and could pass as a confident normal. The retrieval
similarity tells the two apart: on the three shared classes, a left-out class's test images reach a median
cosine similarity of ~0.4-0.5 to the nearest known class, known classes' test images (defects included) at
least ~0.83 (``benchmarks/unknown_products.py``).

Per class ``c`` the bound is fitted on NORMAL VALIDATION images only: halfway between the least similar of
``c``'s own images (to ``c``'s key) and the most similar image of any other known class (to ``c``'s key),
never above the former. An image retrieved as ``c`` with a lower similarity is "unknown class": reported as
such and labelled anomalous (a line that must stop does), with score 1. A class with no other known class to
compare with has no bound (NaN: never unknown). In the exported graph it is one gather and one comparison.

Example:
    >>> import torch
    >>> bound = UnknownClassBound()
    >>> similarity = torch.tensor([[0.99, 0.40], [0.97, 0.45], [0.50, 0.98], [0.42, 0.99]])
    >>> bound.fit(torch.tensor([0, 0, 1, 1]), similarity)
    >>> [round(v, 3) for v in bound.bounds.tolist()]
    [0.735, 0.715]
    >>> bound(torch.tensor([0, 1]), torch.tensor([[0.6, 0.3], [0.2, 0.9]]))[1].tolist()
    [True, False]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class UnknownClassBound(nn.Module):
    """Per-class lower bound of the retrieval similarity below which an image is of an unknown class."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bounds", torch.empty(0))

    @property
    def num_classes(self) -> int:
        """Classes with a (possibly NaN) bound; 0 before fitting."""
        return int(self.bounds.numel())

    @staticmethod
    def _bound(own: torch.Tensor, others: torch.Tensor) -> float:
        """Halfway between the least similar own image and the most similar other image, at most the former."""
        if len(own) == 0 or len(others) == 0:
            return float("nan")
        lowest_own = float(own.min())
        return min(0.5 * (lowest_own + float(others.max())), lowest_own)

    @torch.no_grad()
    def fit(self, class_ids: torch.Tensor, similarity: torch.Tensor) -> None:
        """Fit every class's bound from normal validation images.

        Args:
            class_ids: ``(N,)`` retrieved class of each image.
            similarity: ``(N, C)`` similarity of each image to each class.
        """
        class_ids = class_ids.reshape(-1).long()
        bounds = [
            self._bound(similarity[class_ids == c, c], similarity[class_ids != c, c])
            for c in range(similarity.shape[1])
        ]
        self.bounds = torch.tensor(bounds, device=self.bounds.device)

    @torch.no_grad()
    def append(self, own: torch.Tensor, others: torch.Tensor) -> None:
        """Add a bound for one more class (the last index).

        Args:
            own: ``(N,)`` similarity of the new class's held-out normal images to it.
            others: Similarities to it of what stands for the other classes (see ``PromptedAnomalyModule.add_class``).
        """
        value = torch.tensor([self._bound(own.reshape(-1), others.reshape(-1))], device=self.bounds.device)
        self.bounds = torch.cat([self.bounds, value])

    def remove(self, index: int) -> None:
        """Drop class ``index``'s bound; later classes move up."""
        self.bounds = torch.cat([self.bounds[:index], self.bounds[index + 1 :]])

    def forward(self, class_ids: torch.Tensor, similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's similarity to its retrieved class, and whether that is below the class's bound.

        Args:
            class_ids: ``(B,)`` retrieved classes.
            similarity: ``(B, C)`` similarity to every class.

        Returns:
            ``(similarity (B,), unknown (B,) bool)``; never unknown before fitting or where the bound is NaN.
        """
        best = similarity.gather(1, class_ids.reshape(-1, 1).long()).reshape(-1)
        if self.num_classes == 0:  # still compared (with NaN): the exported graph has the same nodes either way
            bound = torch.full_like(best, float("nan"))
        else:
            bound = self.bounds[class_ids.reshape(-1).long().clamp(0, self.num_classes - 1)]
        return best, best < bound  # NaN bound: False

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Sized when fitted: adopt the checkpoint's size before the copy.
        saved = state_dict.get(prefix + "bounds", self.bounds)
        if saved.shape != self.bounds.shape:
            self.bounds = torch.empty_like(saved, device=self.bounds.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
