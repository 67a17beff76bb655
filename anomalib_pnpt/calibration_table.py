# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The statistics of normal images that calibrate scores: one row per class, one row over all classes.

Six statistics per row (:data:`STATISTICS`): the image threshold, the image scores' min and max, and the same
for anomaly-map pixels. A threshold is the ``quantile`` of the normal values (1.0: the highest normal value,
anomalib's own rule when validation holds no anomaly); min and max set the normalisation, with anomalib's
min-max-threshold formula (:func:`normalize`), so that a value at its threshold maps to 0.5. The row over all
classes is the fallback wherever a class's value is missing (NaN: a class without validation images, or a
single image, which gives no range).

The table is data sized at calibration, in buffers (anomalib's ``DynamicBufferMixin`` resizes them when a
checkpoint is loaded), so it is saved with the model and lives in the exported graph as two constants.

Example:
    >>> import torch
    >>> table = CalibrationTable()
    >>> table.fit(torch.tensor([0, 0, 1, 1]), torch.tensor([0.1, 0.2, 5.0, 6.0]), None, num_classes=2)
    >>> table.column("image_threshold").tolist()
    [0.20000000298023224, 6.0]
    >>> scores, labels = table.calibrate(torch.tensor([0.3, 5.5]), torch.tensor([0, 1]), "image", 0.5)
    >>> labels.tolist()  # 0.3 is above class 0's normals; 5.5 is inside class 1's
    [True, False]
"""

from __future__ import annotations

import math

import torch
from anomalib.models.components.base import DynamicBufferMixin

STATISTICS = ("image_threshold", "image_min", "image_max", "pixel_threshold", "pixel_min", "pixel_max")
LEVELS = ("image", "pixel")


def order_statistic(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """The ``quantile`` of all elements as an order statistic (``quantile=1`` is the maximum).

    ``torch.quantile`` refuses inputs over 16 M elements; a class's validation pixels can exceed that.

    Args:
        values: Any tensor.
        quantile: In ``(0, 1]``.

    Returns:
        A scalar tensor: the ``ceil(quantile * n)``-th smallest value.

    Example:
        >>> order_statistic(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.5)
        tensor(2.)
    """
    flat = values.detach().reshape(-1).float()
    rank = min(max(math.ceil(quantile * flat.numel()), 1), flat.numel())
    return flat.kthvalue(rank).values


def normalize(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The min-max-threshold normalisation of anomalib: ``(v - threshold) / (high - low) + 0.5``, clipped to [0, 1].

    The same formula as anomalib's ``PostProcessor`` (so calibrated scores read the same way), written here
    because anomalib's is private. Where ``high == low`` a value is 1 above the threshold, 0 below and 0.5 at
    it; where the range is unknown (NaN) values pass unchanged; a NaN threshold is the middle of the range.

    Args:
        values: Raw scores or maps.
        low: Minimum of the normal values (broadcast against ``values``).
        high: Maximum of the normal values.
        threshold: Raw threshold.

    Returns:
        Normalised values, ``values``' shape.

    Example:
        >>> normalize(torch.tensor([1.0, 3.0]), torch.tensor(0.0), torch.tensor(4.0), torch.tensor(2.0)).tolist()
        [0.25, 0.75]
    """
    threshold = torch.where(torch.isnan(threshold), (high + low) / 2, threshold)
    value_range = high - low
    zero_range = value_range == 0
    safe_range = torch.where(zero_range, torch.ones_like(value_range), value_range)
    normalized = ((values - threshold) / safe_range + 0.5).clamp(min=0, max=1)
    degenerate = torch.where(values > threshold, 1.0, torch.where(values < threshold, 0.0, 0.5))
    normalized = torch.where(zero_range, degenerate.to(normalized.dtype), normalized)
    return torch.where(~torch.isnan(low) & ~torch.isnan(high), normalized, values)


class CalibrationTable(DynamicBufferMixin):
    """Per-class and overall normal-image statistics, and the calibration of raw values by them.

    Buffers: ``per_class (C, 6)`` and ``overall (6,)``, columns in :data:`STATISTICS` order.

    Args:
        image_quantile: Quantile of a class's normal image scores used as its image threshold.
        pixel_quantile: Quantile of a class's normal anomaly-map values used as its pixel threshold.

    Example:
        >>> CalibrationTable(pixel_quantile=0.999).num_classes
        0
    """

    def __init__(self, image_quantile: float = 1.0, pixel_quantile: float = 1.0) -> None:
        super().__init__()
        for quantile in (image_quantile, pixel_quantile):
            if not 0 < quantile <= 1:
                msg = f"Calibration quantiles must lie in (0, 1], got {quantile}."
                raise ValueError(msg)
        self.image_quantile = image_quantile
        self.pixel_quantile = pixel_quantile
        self.register_buffer("per_class", torch.empty(0, len(STATISTICS)))
        self.register_buffer("overall", torch.full((len(STATISTICS),), float("nan")))

    @property
    def num_classes(self) -> int:
        """Classes with a row (0 before calibration)."""
        return int(self.per_class.shape[0])

    def column(self, name: str) -> torch.Tensor:
        """One statistic of every class, ``(C,)`` (NaN where a class had no data).

        Args:
            name: One of :data:`STATISTICS`.

        Returns:
            The column.
        """
        return self.per_class[:, STATISTICS.index(name)]

    def overall_value(self, name: str) -> torch.Tensor:
        """One statistic over all classes' normal images (a 0-d tensor, NaN before calibration).

        Args:
            name: One of :data:`STATISTICS`.

        Returns:
            The value.
        """
        return self.overall[STATISTICS.index(name)]

    def row(self, scores: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        """The statistics of one set of normal images, ``(6,)``; NaN where they cannot be had.

        Args:
            scores: ``(N,)`` raw image scores.
            maps: ``(N, ...)`` raw anomaly maps, or ``None`` for a classification model.

        Returns:
            The row.
        """
        values = [float("nan")] * len(STATISTICS)
        if len(scores):
            values[0] = float(order_statistic(scores, self.image_quantile))
            if len(scores) > 1:  # one image gives no score range: its class keeps its threshold, the overall range
                values[1:3] = [float(scores.min()), float(scores.max())]
            if maps is not None:
                values[3:] = [float(order_statistic(maps, self.pixel_quantile)), float(maps.min()), float(maps.max())]
        return torch.tensor(values, device=self.overall.device)

    @torch.no_grad()
    def fit(self, class_ids: torch.Tensor, scores: torch.Tensor, maps: torch.Tensor | None, num_classes: int) -> None:
        """Calibrate every class and the overall row from the raw predictions of normal images.

        Args:
            class_ids: ``(N,)`` retrieved class of each image.
            scores: ``(N,)`` raw image scores.
            maps: ``(N, ...)`` raw anomaly maps, or ``None``.
            num_classes: Rows of the table (the prompt pool's class count).
        """
        maps = maps.reshape(maps.shape[0], -1) if maps is not None else None
        self.overall = self.row(scores, maps)
        rows = [
            self.row(scores[selected], maps[selected] if maps is not None else None)
            for selected in (class_ids == index for index in range(num_classes))
        ]
        self.per_class = torch.stack(rows) if rows else torch.empty(0, len(STATISTICS), device=self.overall.device)

    @torch.no_grad()
    def append(self, scores: torch.Tensor, maps: torch.Tensor | None) -> None:
        """Add a row for one more class (the last index); the overall row stays the original calibration's.

        Args:
            scores: ``(N,)`` raw image scores of the class's normal images.
            maps: ``(N, ...)`` their raw anomaly maps, or ``None``.
        """
        maps = maps.reshape(maps.shape[0], -1) if maps is not None else None
        self.per_class = torch.cat([self.per_class, self.row(scores, maps)[None]])

    @torch.no_grad()
    def remove(self, index: int) -> None:
        """Drop class ``index``'s row; later classes move up.

        Args:
            index: Class index.
        """
        self.per_class = torch.cat([self.per_class[:index], self.per_class[index + 1 :]])

    def lookup(self, name: str, class_ids: torch.Tensor | None) -> torch.Tensor:
        """Each sample's class's statistic ``(B,)``, the overall value where that is NaN; ``class_ids=None``: overall.

        Args:
            name: One of :data:`STATISTICS`.
            class_ids: ``(B,)`` class of each sample, or ``None``.

        Returns:
            ``(B,)`` values, or the 0-d overall value.
        """
        fallback = self.overall_value(name)
        if class_ids is None or self.num_classes == 0:
            return fallback
        values = self.column(name)[class_ids.long().clamp(0, self.num_classes - 1)]
        return torch.where(torch.isnan(values), fallback.to(values.dtype), values)

    def calibrate(
        self,
        values: torch.Tensor,
        class_ids: torch.Tensor | None,
        level: str,
        normalized_threshold: float | torch.Tensor,
        enable_normalization: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise raw values ``(B, ...)`` by their classes' statistics and threshold them.

        Args:
            values: Raw scores ``(B,)`` or maps ``(B, ...)``.
            class_ids: ``(B,)`` class of each sample; ``None``: the overall row.
            level: ``"image"`` or ``"pixel"``.
            normalized_threshold: Threshold on normalised values (anomalib: ``1 - sensitivity``).
            enable_normalization: ``False``: compare the raw values with the raw threshold.

        Returns:
            ``(values, labels)``: normalised (or raw) values and the boolean decisions.
        """
        if level not in LEVELS:
            msg = f"level must be one of {LEVELS}, got {level!r}."
            raise ValueError(msg)
        shape = (-1,) + (1,) * (values.dim() - 1)
        threshold = self.lookup(f"{level}_threshold", class_ids)
        threshold = threshold.view(shape) if threshold.dim() else threshold
        if not enable_normalization:
            return values, values > threshold
        low, high = (self.lookup(f"{level}_{bound}", class_ids) for bound in ("min", "max"))
        low, high = (bound.view(shape) if bound.dim() else bound for bound in (low, high))
        normalized = normalize(values, low, high, threshold)
        return normalized, normalized > torch.as_tensor(normalized_threshold, device=normalized.device)
