# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Which normal images become OneNIP's prompts: the inference prompts and the bank training draws from.

OneNIP reconstructs an image guided by ONE normal image of its class (the paper, Sec. 3). Which one is left
open; this package's rule, in one pass over the training images:

* per class, a bank of up to ``bank_capacity`` images chosen by a hash of their path -- so the choice does
  not depend on the loader's order, and every distributed rank chooses the same images; training draws its
  random same-class prompts from it;
* the inference prompts are the ``prompts_per_class`` bank images whose pooled feature (the retrieval key)
  is closest, by cosine, to their class's mean key over ALL its training images: typical images, not random
  ones. :func:`closest_to_mean` is the same rule for a class added later from a set of images.

Example:
    >>> import torch
    >>> selection = PromptSelection(num_classes=2, prompts_per_class=1, bank_capacity=2)
    >>> keys = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]])
    >>> selection.add(torch.tensor([0, 0, 1, 1]), keys, keys[:, :, None, None], ["a", "b", "c", "d"])
    >>> chosen = selection.choose()
    >>> chosen.prompt_class_ids.tolist(), chosen.bank_class_ids.tolist()
    ([0, 1], [0, 0, 1, 1])
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.nn import functional as F  # noqa: N812


def closest_to_mean(keys: torch.Tensor, mean_key: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` keys most similar (cosine) to ``mean_key``, most similar first.

    Args:
        keys: ``(N, D)`` candidate keys.
        mean_key: ``(D,)`` the class's mean key.
        count: How many to choose.

    Returns:
        ``(count,)`` indices into ``keys``.

    Example:
        >>> closest_to_mean(torch.tensor([[0.0, 1.0], [1.0, 0.1]]), torch.tensor([1.0, 0.0]), 1).tolist()
        [1]
    """
    return F.cosine_similarity(keys, mean_key[None], dim=1).argsort(descending=True)[:count]


class SelectedPrompts(NamedTuple):
    """The chosen images' features and classes: inference prompts and the training bank.

    Attributes:
        prompt_class_ids: ``(P,)`` class of every inference prompt, ``prompts_per_class`` per class.
        prompt_features: ``(P, C, h, w)`` their features.
        bank_class_ids: ``(T,)`` class of every bank image.
        bank_features: ``(T, C, h, w)`` their features.
    """

    prompt_class_ids: torch.Tensor
    prompt_features: torch.Tensor
    bank_class_ids: torch.Tensor
    bank_features: torch.Tensor


class PromptSelection:
    """Accumulates training images batch by batch and chooses OneNIP's prompts from them.

    Args:
        num_classes: Number of classes.
        prompts_per_class: Inference prompts per class.
        bank_capacity: Most bank images per class (at least ``prompts_per_class``).
    """

    def __init__(self, num_classes: int, prompts_per_class: int, bank_capacity: int) -> None:
        self.num_classes = num_classes
        self.prompts_per_class = prompts_per_class
        self.capacity = max(bank_capacity, prompts_per_class)
        self.key_sums: torch.Tensor | None = None
        self.counts = torch.zeros(num_classes)
        # Per class a max-heap by negated hash: it keeps the ``capacity`` smallest hashes seen.
        self.banks: list[list[tuple[int, str, torch.Tensor, torch.Tensor]]] = [[] for _ in range(num_classes)]

    def add(self, class_ids: torch.Tensor, keys: torch.Tensor, features: torch.Tensor, paths: Sequence[str]) -> None:
        """Count a batch of training images into the class means and the banks.

        Args:
            class_ids: ``(B,)`` class of every image.
            keys: ``(B, D)`` their retrieval keys.
            features: ``(B, C, h, w)`` their features.
            paths: Their files (the hash that chooses the bank).
        """
        keys, ids = keys.detach().cpu(), class_ids.detach().cpu().long()
        if self.key_sums is None:
            self.key_sums = torch.zeros(self.num_classes, keys.shape[1])
        self.key_sums.index_add_(0, ids, keys)
        self.counts.index_add_(0, ids, torch.ones(len(ids)))
        for row, (class_id, path) in enumerate(zip(ids.tolist(), paths, strict=True)):
            entry = (-zlib.crc32(str(path).encode()), str(path), keys[row], features[row].detach().cpu())
            bank = self.banks[class_id]
            if len(bank) < self.capacity:
                heapq.heappush(bank, entry)
            elif entry[0] > bank[0][0]:
                heapq.heapreplace(bank, entry)

    def choose(self) -> SelectedPrompts:
        """The inference prompts and the bank of every class.

        Returns:
            The :class:`SelectedPrompts`.

        Raises:
            RuntimeError: Without images, or where a class has fewer images than ``prompts_per_class``.
        """
        if self.key_sums is None:
            msg = "No training batch to build the prompt pool from."
            raise RuntimeError(msg)
        prompt_ids, prompt_features, bank_ids, bank_features = [], [], [], []
        for class_id, heap in enumerate(self.banks):
            if len(heap) < self.prompts_per_class:
                needed = self.prompts_per_class
                msg = f"Class {class_id} has {len(heap)} training images; {needed} prompt images are needed."
                raise RuntimeError(msg)
            bank = sorted(heap, key=lambda entry: entry[1])  # by path: deterministic
            mean_key = self.key_sums[class_id] / self.counts[class_id]
            for index in closest_to_mean(torch.stack([e[2] for e in bank]), mean_key, self.prompts_per_class).tolist():
                prompt_ids.append(class_id)
                prompt_features.append(bank[index][3])
            bank_ids += [class_id] * len(bank)
            bank_features += [e[3] for e in bank]
        return SelectedPrompts(
            torch.tensor(prompt_ids), torch.stack(prompt_features), torch.tensor(bank_ids), torch.stack(bank_features)
        )
