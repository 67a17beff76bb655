# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Image items and batches that carry their class, and the inference output that carries the retrieved one.

anomalib's :class:`~anomalib.data.ImageItem` has no class field, because anomalib trains one class at a
time. These subclasses add ``category`` (the class name) and ``category_id`` (its index in the
datamodule's sorted category list) to the item, the batch and their numpy twins, so every stock anomalib
component (models, post-processor, visualizer, exporter) keeps working while prompt pools and the
per-class evaluator can read the class. ``pred_category_id`` is the class the model RETRIEVED (no label
needed). :class:`MultiClassInferenceBatch` is what the prompt-pool models return: anomalib's
``InferenceBatch`` (its four fields, all that anomalib's ``ImageBatch`` and stock inferencers accept) with the
retrieved class as an attribute. :class:`MultiClassGraphOutputs` names the five outputs of an exported graph
before the class output is hidden from anomalib's stock inferencers (see :mod:`anomalib_pnpt.deploy`).

Example:
    >>> import torch
    >>> item = MultiClassImageItem(image=torch.rand(3, 8, 8), gt_label=torch.tensor(0), category="bottle",
    ...                            category_id=torch.tensor(0))
    >>> batch = MultiClassImageBatch.collate([item, item])
    >>> batch.category, batch.category_id.tolist()
    (['bottle', 'bottle'], [0, 0])
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from anomalib.data import ImageBatch, ImageItem, InferenceBatch, NumpyImageBatch, NumpyImageItem


@dataclass
class MultiClassNumpyImageItem(NumpyImageItem):
    """Numpy image item with its class name and index."""

    category: str | None = None
    category_id: int | None = None
    pred_category_id: int | None = None
    pred_category: str | None = None
    pred_category_similarity: float | None = None
    pred_unknown: bool | None = None


@dataclass
class MultiClassNumpyImageBatch(NumpyImageBatch):
    """Numpy image batch with per-sample class names and indices."""

    item_class: ClassVar[type[NumpyImageItem]] = MultiClassNumpyImageItem
    category: list[str] | None = None
    category_id: np.ndarray | None = None
    pred_category_id: np.ndarray | None = None
    pred_category: list[str] | None = None
    pred_category_similarity: np.ndarray | None = None
    pred_unknown: np.ndarray | None = None


@dataclass
class MultiClassImageItem(ImageItem):
    """Torch image item with its class name (``category``) and index (``category_id``)."""

    numpy_class: ClassVar[type[NumpyImageItem]] = MultiClassNumpyImageItem
    category: str | None = None
    category_id: torch.Tensor | None = None
    pred_category_id: torch.Tensor | None = None
    pred_category: str | None = None
    pred_category_similarity: torch.Tensor | None = None
    pred_unknown: torch.Tensor | None = None


@dataclass
class MultiClassImageBatch(ImageBatch):
    """Torch image batch with per-sample class names (list) and indices (``(B,)`` long tensor).

    What the prompt-pool models add in their steps are fields too: ``pred_category_id`` and ``pred_category`` (the
    retrieved class's index and name), ``pred_category_similarity`` (to its nearest training image) and
    ``pred_unknown`` (of no known class, see :mod:`anomalib_pnpt.unknown_class`).
    """

    item_class: ClassVar[type[ImageItem]] = MultiClassImageItem
    numpy_class: ClassVar[type[NumpyImageBatch]] = MultiClassNumpyImageBatch
    category: list[str] | None = None
    category_id: torch.Tensor | None = None
    pred_category_id: torch.Tensor | None = None
    pred_category: list[str] | None = None
    pred_category_similarity: torch.Tensor | None = None
    pred_unknown: torch.Tensor | None = None

    @classmethod
    def from_batch(cls, batch: ImageBatch) -> MultiClassImageBatch:
        """The same batch with this class's fields (a stock anomalib datamodule's batch gets empty ones).

        Args:
            batch: An anomalib image batch.

        Returns:
            ``batch`` itself if it is one already, else a batch holding the same field values.

        Example:
            >>> stock = ImageBatch(image=torch.rand(2, 3, 8, 8))
            >>> converted = MultiClassImageBatch.from_batch(stock)
            >>> torch.equal(converted.image, stock.image), converted.pred_category_id
            (True, None)
        """
        if isinstance(batch, cls):
            return batch
        return cls(**{field.name: getattr(batch, field.name) for field in fields(batch) if field.init})


class MultiClassInferenceBatch(InferenceBatch):
    """anomalib's ``InferenceBatch`` plus the class retrieved from the prompt pool, ``pred_category_id`` (``(B,)``).

    The class is an attribute, not a tuple field: ``_asdict()`` gives anomalib's four fields, so anomalib's
    ``TorchInferencer`` (``ImageBatch(**prediction._asdict())``) accepts a torch export of our models.

    Args:
        pred_score: Image scores.
        pred_label: Image labels.
        anomaly_map: Anomaly maps.
        pred_mask: Predicted masks.
        pred_category_id: Retrieved class index of every image.
        pred_category_similarity: Retrieval similarity of every image to its retrieved class.
        pred_unknown: Whether that similarity is below the class's bound (an unknown product).

    Example:
        >>> batch = MultiClassInferenceBatch(torch.zeros(2), pred_category_id=torch.tensor([1, 0]))
        >>> sorted(batch._asdict()), batch.pred_category_id.tolist()
        (['anomaly_map', 'pred_label', 'pred_mask', 'pred_score'], [1, 0])
    """

    def __new__(
        cls,
        pred_score: torch.Tensor | None = None,
        pred_label: torch.Tensor | None = None,
        anomaly_map: torch.Tensor | None = None,
        pred_mask: torch.Tensor | None = None,
        pred_category_id: torch.Tensor | None = None,
        pred_category_similarity: torch.Tensor | None = None,
        pred_unknown: torch.Tensor | None = None,
    ) -> MultiClassInferenceBatch:
        """Build the tuple of anomalib's fields and attach the retrieved class and the unknown-class decision."""
        batch = super().__new__(cls, pred_score, pred_label, anomaly_map, pred_mask)
        batch.pred_category_id = pred_category_id
        batch.pred_category_similarity = pred_category_similarity
        batch.pred_unknown = pred_unknown
        return batch


class MultiClassGraphOutputs(NamedTuple):
    """The outputs an exported graph is traced with: anomalib's four and the retrieved class, by name."""

    pred_score: torch.Tensor | None = None
    pred_label: torch.Tensor | None = None
    anomaly_map: torch.Tensor | None = None
    pred_mask: torch.Tensor | None = None
    pred_category_id: torch.Tensor | None = None
    pred_category_similarity: torch.Tensor | None = None
    pred_unknown: torch.Tensor | None = None


class PromptedPrediction(NamedTuple):
    """What a prompt-pool network predicts (``PnptModel.predict``, ``OneNipModel.predict``): raw, uncalibrated.

    anomalib's ``InferenceBatch`` fields the network makes, plus the class it retrieved, how similar the image is to
    that class's nearest training image, and whether it is of an unknown class (see
    :mod:`anomalib_pnpt.unknown_class`). The module calibrates scores and maps per retrieved class.

    Attributes:
        pred_score: ``(B,)`` image scores.
        anomaly_map: ``(B, 1, H, W)`` anomaly maps.
        class_id: ``(B,)`` retrieved class indices.
        class_similarity: ``(B,)`` cosine similarity to the retrieved class's nearest training image.
        unknown: ``(B,)`` whether that is below the class's bound.

    Example:
        >>> scores, maps = torch.rand(2), torch.rand(2, 1, 8, 8)
        >>> prediction = PromptedPrediction(scores, maps, torch.zeros(2).long(), torch.ones(2), torch.zeros(2).bool())
        >>> prediction.class_id.tolist()
        [0, 0]
    """

    pred_score: torch.Tensor
    anomaly_map: torch.Tensor
    class_id: torch.Tensor
    class_similarity: torch.Tensor
    unknown: torch.Tensor
