# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Class-retrieval accuracy: the share of test images whose retrieved class is their own, as an anomalib metric.

A multi-class model is given no class label at inspection time; it retrieves the class from its prompt pool.
This metric counts how often that class is the image's, by class NAME (``pred_category`` against
``category``), so a datamodule over a subset of the model's classes, numbered differently, is compared
correctly. It sits in anomalib's :class:`~anomalib.metrics.Evaluator` beside the image and pixel metrics and is
logged as ``retrieval_accuracy``.

Under distributed testing Lightning's sampler repeats up to ``world_size - 1`` images so that every rank gets
the same number; the metric keeps a hash of each image's path and counts every image once. Batches without
class names (a stock single-class datamodule) are skipped, and a run without any reports nothing, as anomalib's
non-strict metrics do.

Example:
    >>> from types import SimpleNamespace
    >>> metric = RetrievalAccuracy()
    >>> metric.update(SimpleNamespace(pred_category=["a", "b"], category=["a", "a"], image_path=["1", "2"]))
    >>> metric.update(SimpleNamespace(pred_category=["b"], category=["a"], image_path=["2"]))  # a repeat
    >>> float(metric.compute())
    0.5
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def _path_id(path: str) -> int:
    """A 63-bit hash of an image path (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big") >> 1


def _cat(state: list[torch.Tensor] | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A ``cat`` state as one tensor: a list before a distributed sync (possibly empty), a tensor after it."""
    if isinstance(state, list) and not state:
        return torch.zeros(0, dtype=dtype)
    return dim_zero_cat(state)


class RetrievalAccuracy(AnomalibMetric, Metric):
    """Share of images whose retrieved class name is their class name, each image counted once.

    Args:
        fields: The batch fields of the retrieved and true class names.
        **kwargs: anomalib's metric arguments (``prefix``, ``strict``) and torchmetrics'.
    """

    default_fields: Sequence[str] = ("pred_category", "category")
    full_state_update = False

    def __init__(self, fields: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(fields=fields, strict=kwargs.pop("strict", False), **kwargs)
        self.name = kwargs.get("prefix", "") + "retrieval_accuracy"
        self.add_state("hits", default=[], dist_reduce_fx="cat")
        self.add_state("path_ids", default=[], dist_reduce_fx="cat")
        self.add_state("unnamed_hits", default=[], dist_reduce_fx="cat")  # images without a path: each counted

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        """Count a batch's retrievals (skipped when it has no class names).

        Args:
            batch: A batch with ``pred_category`` and ``category`` (lists of names) and ``image_path``.
            *args: Unused.
            **kwargs: Unused.
        """
        del args, kwargs
        predicted, truth = (getattr(batch, field, None) for field in self.fields)
        if predicted is None or truth is None:
            self._update_count -= 1  # as anomalib's non-strict metrics: this batch does not count as an update
            return
        hits = torch.tensor([p == t for p, t in zip(predicted, truth, strict=True)], dtype=torch.float)
        paths = getattr(batch, "image_path", None)
        if paths is None:
            self.unnamed_hits.append(hits)
            return
        self.hits.append(hits)
        self.path_ids.append(torch.tensor([_path_id(str(path)) for path in paths], dtype=torch.long))

    def compute(self) -> torch.Tensor | None:
        """The accuracy over distinct images (``None`` when no batch had class names)."""
        if self._update_count == 0:
            return None
        hits, ids = _cat(self.hits, torch.float), _cat(self.path_ids, torch.long)
        unique, inverse = torch.unique(ids, return_inverse=True)
        # A repeated image has the same retrieval each time: one value per distinct path.
        distinct = hits.new_zeros(len(unique)).scatter_(0, inverse, hits)
        return torch.cat([distinct, _cat(self.unnamed_hits, torch.float)]).mean()
