# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Per-class normalisation and thresholds, calibrated on held-out NORMAL images, applied by retrieved class.

anomalib's :class:`~anomalib.post_processing.PostProcessor` keeps one image threshold, one pixel threshold
and one min-max range for the whole validation set. A unified model sees classes whose raw scores run at
very different levels (a textured tile scores higher than a clean bottle), so one threshold is too strict
for some classes and too loose for others. :class:`PerClassPostProcessor` keeps the same six statistics
PER CLASS, indexed by the class the prompt pool retrieves for each image. Retrieval happens inside the
model, so the exported graph applies the right class's values with no class label given.

Calibration uses only the normal images of the validation split (``gt_label == 0``), never anomalies and
never the test set: use a datamodule with ``val_split_mode="from_train"`` (the default of this package's
multi-class datamodules). With only normal images an F1-optimal threshold cannot be chosen; the rule is
the one anomalib itself falls back to when validation holds no anomaly -- the highest normal score -- or,
with ``image_quantile`` / ``pixel_quantile`` below 1, that quantile of the normal scores / pixels. The
min-max range of the normal values sets the normalisation, with anomalib's formula, so a calibrated
threshold maps to ``1 - sensitivity`` (0.5) after normalisation as in anomalib; a class with a single
validation image has no score range and uses the global one.

The global statistics of the parent class are computed with the same rule over all classes together: they
are the fallback for a class without validation images, and ``per_class=False`` reproduces a single global
threshold for comparison.

Example:
    >>> import torch
    >>> from anomalib.data import InferenceBatch
    >>> post = PerClassPostProcessor()
    >>> post.set_statistics(
    ...     class_ids=torch.tensor([0, 0, 1, 1]),
    ...     scores=torch.tensor([0.1, 0.2, 5.0, 6.0]),
    ...     maps=torch.tensor([0.1, 0.2, 5.0, 6.0]).view(4, 1, 1, 1).expand(4, 1, 2, 2),
    ...     num_classes=2,
    ... )
    >>> out = post(InferenceBatch(pred_score=torch.tensor([0.3, 5.5])), class_ids=torch.tensor([0, 1]))
    >>> out.pred_label.tolist()  # 0.3 is above class 0's normals; 5.5 is inside class 1's
    [True, False]
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from anomalib.data import InferenceBatch
from anomalib.post_processing import PostProcessor
from lightning.pytorch import LightningModule, Trainer

from anomalib_pnpt.distributed import gather_samples, is_distributed
from anomalib_pnpt.unknown_class import UnknownClassBound

logger = logging.getLogger(__name__)

# Per-class buffers, one value per class: (level, statistic) -> buffer name "class_<level>_<statistic>".
CLASS_STATISTICS = (
    "image_threshold",
    "image_min",
    "image_max",
    "pixel_threshold",
    "pixel_min",
    "pixel_max",
)


def order_statistic(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """The ``quantile`` of all elements as an order statistic (``quantile=1`` is the maximum).

    ``torch.quantile`` refuses inputs over 16 M elements; a class's validation pixels can exceed that.

    Args:
        values: Any tensor.
        quantile: In ``(0, 1]``.

    Returns:
        A scalar tensor: the ``ceil(quantile * n)``-th smallest value.
    """
    flat = values.detach().reshape(-1).float()
    rank = min(max(math.ceil(quantile * flat.numel()), 1), flat.numel())
    return flat.kthvalue(rank).values


class PerClassPostProcessor(PostProcessor):
    """anomalib post-processor with normalisation and thresholds per retrieved class.

    Args:
        image_quantile: Quantile of the class's normal validation image scores used as its image
            threshold (1.0: the highest, anomalib's own rule for normal-only validation data).
        pixel_quantile: Quantile of the class's normal validation anomaly-map values used as its pixel
            threshold.
        per_class: Apply the per-class values (``False``: one global threshold, for comparison).
        enable_normalization: Normalise scores and maps (anomalib's min-max-threshold formula).
        enable_thresholding: Output labels and masks.
        image_sensitivity: anomalib's sensitivity: the normalised image threshold is ``1 - sensitivity``.
        pixel_sensitivity: Same for pixels.
        **kwargs: Passed to anomalib's ``PostProcessor``.

    Example:
        >>> post = PerClassPostProcessor(pixel_quantile=0.999)
        >>> post.num_classes
        0
    """

    def __init__(
        self,
        image_quantile: float = 1.0,
        pixel_quantile: float = 1.0,
        per_class: bool = True,
        enable_normalization: bool = True,
        enable_thresholding: bool = True,
        image_sensitivity: float = 0.5,
        pixel_sensitivity: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            enable_normalization=enable_normalization,
            enable_thresholding=enable_thresholding,
            enable_threshold_matching=False,
            image_sensitivity=image_sensitivity,
            pixel_sensitivity=pixel_sensitivity,
            **kwargs,
        )
        for quantile in (image_quantile, pixel_quantile):
            if not 0 < quantile <= 1:
                msg = f"Calibration quantiles must lie in (0, 1], got {quantile}."
                raise ValueError(msg)
        self.image_quantile = image_quantile
        self.pixel_quantile = pixel_quantile
        self.per_class = per_class
        for name in CLASS_STATISTICS:
            self.register_buffer(f"class_{name}", torch.empty(0))
        self.unknown_class = UnknownClassBound()  # fitted with the rest, on the same normal validation images
        self._normal_scores: list[torch.Tensor] = []
        self._normal_similarities: list[torch.Tensor] = []
        self._normal_maps: list[torch.Tensor] = []
        self._normal_class_ids: list[torch.Tensor] = []
        self._normal_paths: list[str] = []
        self._skipped_anomalous = 0

    @property
    def _checkpoint_config_keys(self) -> tuple[str, ...]:
        return (*super()._checkpoint_config_keys, "image_quantile", "pixel_quantile", "per_class")

    @property
    def num_classes(self) -> int:
        """Number of classes with per-class statistics (0 before calibration)."""
        return int(self.class_image_threshold.numel())

    def class_statistics(self) -> dict[str, torch.Tensor]:
        """Per-class statistics as a dict of ``(num_classes,)`` tensors (NaN where a class had no data)."""
        return {name: getattr(self, f"class_{name}") for name in CLASS_STATISTICS}

    # ---------------------------------------------------------------- calibration (validation hooks)
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting this validation run's normal predictions."""
        del trainer, pl_module
        self._normal_scores, self._normal_maps, self._normal_class_ids, self._normal_paths = [], [], [], []
        self._normal_similarities = []
        self._skipped_anomalous = 0

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Keep the raw score, map and retrieved class of every NORMAL validation image."""
        del trainer, pl_module, args, kwargs
        scores = outputs.pred_score.detach().reshape(-1).float().cpu()
        class_ids = getattr(outputs, "pred_category_id", None)
        class_ids = torch.zeros_like(scores, dtype=torch.long) if class_ids is None else class_ids.reshape(-1).cpu()
        normal = torch.ones_like(scores, dtype=torch.bool)
        if outputs.gt_label is not None:
            normal = outputs.gt_label.reshape(-1).cpu() == 0
        self._skipped_anomalous += int((~normal).sum())
        self._normal_scores.append(scores[normal])
        self._normal_class_ids.append(class_ids[normal].long())
        similarity = getattr(outputs, "class_similarity", None)
        if similarity is not None:
            self._normal_similarities.append(similarity.detach().float().cpu()[normal])
        paths = getattr(outputs, "image_path", None)
        if paths is not None:  # to drop the images a distributed sampler repeats (see _gather_from_all_ranks)
            self._normal_paths += [path for path, keep in zip(paths, normal.tolist(), strict=True) if keep]
        if outputs.anomaly_map is not None:
            maps = outputs.anomaly_map.detach().float().cpu()
            self._normal_maps.append(maps.reshape(maps.shape[0], -1)[normal])

    def on_validation_epoch_end(self, trainer: Trainer | None, pl_module: LightningModule) -> None:
        """Compute the global and per-class statistics from the normal images collected (on every rank)."""
        self._gather_from_all_ranks(trainer)
        if self._skipped_anomalous:
            logger.warning(
                "Per-class calibration ignores the %d anomalous validation images: it uses normal ones only "
                "(use val_split_mode='from_train' so that no test image is used).",
                self._skipped_anomalous,
            )
        if not self._normal_scores or not sum(len(scores) for scores in self._normal_scores):
            logger.warning("Per-class calibration: the validation set has no normal image; statistics unchanged.")
            return
        class_ids = torch.cat(self._normal_class_ids)
        num_classes = max(len(getattr(pl_module, "prompt_categories", []) or []), int(class_ids.max()) + 1)
        self.set_statistics(
            class_ids=class_ids,
            scores=torch.cat(self._normal_scores),
            maps=torch.cat(self._normal_maps) if self._normal_maps else None,
            num_classes=num_classes,
            similarity=torch.cat(self._normal_similarities) if self._normal_similarities else None,
        )
        self._normal_scores, self._normal_maps, self._normal_class_ids, self._normal_paths = [], [], [], []
        self._normal_similarities = []

    def _gather_from_all_ranks(self, trainer: Trainer | None) -> None:
        """Replace this rank's collected normal predictions with those of every rank, under distributed validation.

        Each rank validates its share of the images: without this, every rank -- and the checkpoint rank 0
        saves -- would be calibrated on its own share only (its highest normal score is too low a threshold).
        Lightning's distributed sampler repeats up to ``world_size - 1`` images to even out the ranks; they
        are dropped by path, or a class's single image would count twice and give a zero score range.
        """
        if not is_distributed(trainer):
            return
        columns = {  # the distributed sampler gives every rank at least one batch, so the lists are not empty
            "score": torch.cat(self._normal_scores),
            "class_id": torch.cat(self._normal_class_ids),
            "map": torch.cat(self._normal_maps) if self._normal_maps else None,
            "similarity": torch.cat(self._normal_similarities) if self._normal_similarities else None,
        }
        paths = self._normal_paths if len(self._normal_paths) == len(columns["score"]) else None
        merged, gathered_paths = gather_samples(trainer, columns, paths)
        self._normal_scores, self._normal_class_ids = [merged["score"]], [merged["class_id"]]
        self._normal_maps = [merged["map"]] if merged["map"] is not None else []
        self._normal_similarities = [merged["similarity"]] if merged["similarity"] is not None else []
        self._normal_paths = gathered_paths or []

    def set_statistics(
        self,
        class_ids: torch.Tensor,
        scores: torch.Tensor,
        maps: torch.Tensor | None,
        num_classes: int,
        similarity: torch.Tensor | None = None,
    ) -> None:
        """Calibrate from the raw predictions of normal images.

        Args:
            class_ids: ``(N,)`` retrieved class of each image.
            scores: ``(N,)`` raw image scores.
            maps: ``(N, ...)`` raw anomaly maps, or ``None`` for a classification model.
            num_classes: Size of the per-class tables (the prompt pool's class count).
            similarity: ``(N, C)`` retrieval similarity to every class: fits the unknown-class bounds.
        """
        maps = maps.reshape(maps.shape[0], -1) if maps is not None else None
        device = self._image_threshold.device
        overall = self._statistics(scores, maps)
        for buffer, value in zip(
            ("_image_threshold", "image_min", "image_max", "_pixel_threshold", "pixel_min", "pixel_max"),
            overall,
            strict=True,
        ):
            getattr(self, buffer).fill_(value)
        rows = [
            self._statistics(scores[selected], maps[selected] if maps is not None else None)
            for selected in (class_ids == index for index in range(num_classes))
        ]
        table = torch.tensor(rows, device=device)
        for column, name in enumerate(CLASS_STATISTICS):
            setattr(self, f"class_{name}", table[:, column].contiguous())
        if similarity is not None:
            self.unknown_class.fit(class_ids, similarity)

    def _statistics(self, scores: torch.Tensor, maps: torch.Tensor | None) -> list[float]:
        """One class's (or all images') statistics in ``CLASS_STATISTICS`` order; NaN where they cannot be had."""
        values = [float("nan")] * len(CLASS_STATISTICS)
        if len(scores):
            values[0] = float(order_statistic(scores, self.image_quantile))
            # One image gives no score range: its class keeps its threshold but the global range.
            if len(scores) > 1:
                values[1:3] = [float(scores.min()), float(scores.max())]
            if maps is not None:
                values[3:] = [
                    float(order_statistic(maps, self.pixel_quantile)),
                    float(maps.min()),
                    float(maps.max()),
                ]
        return values

    def append_class(
        self,
        scores: torch.Tensor,
        maps: torch.Tensor | None,
        own_similarity: torch.Tensor | None = None,
        other_similarity: torch.Tensor | None = None,
    ) -> None:
        """Calibrate one more class (the last index) from raw predictions of its normal images.

        The global statistics stay those of the original calibration.

        Args:
            scores: ``(N,)`` raw image scores.
            maps: ``(N, ...)`` raw anomaly maps, or ``None``.
            own_similarity: ``(N,)`` retrieval similarity of those images to the new class.
            other_similarity: Similarities to the new class of what stands for the other classes.
        """
        if self.unknown_class.num_classes and own_similarity is not None and other_similarity is not None:
            self.unknown_class.append(own_similarity, other_similarity)
        maps = maps.reshape(maps.shape[0], -1) if maps is not None else None
        row = torch.tensor(self._statistics(scores, maps), device=self._image_threshold.device)
        for column, name in enumerate(CLASS_STATISTICS):
            setattr(self, f"class_{name}", torch.cat([getattr(self, f"class_{name}"), row[column : column + 1]]))

    def remove_class(self, index: int) -> None:
        """Drop class ``index``'s statistics; later classes move up.

        Args:
            index: Class index.
        """
        for name in CLASS_STATISTICS:
            table = getattr(self, f"class_{name}")
            setattr(self, f"class_{name}", torch.cat([table[:index], table[index + 1 :]]))
        if self.unknown_class.num_classes:
            self.unknown_class.remove(index)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The tables are sized at calibration; resize the empty buffers of a fresh instance to the checkpoint's.
        for name in CLASS_STATISTICS:
            key = f"{prefix}class_{name}"
            if key in state_dict:
                setattr(self, f"class_{name}", torch.empty_like(state_dict[key], device=self._image_threshold.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---------------------------------------------------------------- application
    def _per_sample(self, name: str, class_ids: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """The statistic ``name`` of each sample's class; the global value where the class has none."""
        table = getattr(self, f"class_{name}")
        values = table[class_ids.long().clamp(0, table.numel() - 1)]
        return torch.where(torch.isnan(values), fallback.to(values.dtype), values)

    def _calibrate(
        self,
        values: torch.Tensor,
        class_ids: torch.Tensor,
        level: str,
        normalized_threshold: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise ``values`` (``(B, ...)``) with their classes' statistics; return them and their labels."""
        shape = (-1,) + (1,) * (values.dim() - 1)
        threshold = self._per_sample(f"{level}_threshold", class_ids, getattr(self, f"{level}_threshold")).view(shape)
        if not self.enable_normalization:
            return values, values > threshold
        low = self._per_sample(f"{level}_min", class_ids, getattr(self, f"{level}_min")).view(shape)
        high = self._per_sample(f"{level}_max", class_ids, getattr(self, f"{level}_max")).view(shape)
        normalized = self._normalize(values, low, high, threshold)
        return normalized, normalized > normalized_threshold.to(normalized.device)

    def forward(
        self,
        predictions: InferenceBatch,
        class_ids: torch.Tensor | None = None,
        unknown: torch.Tensor | None = None,
    ) -> InferenceBatch:
        """Normalise and threshold with the statistics of each sample's retrieved class.

        Args:
            predictions: Raw ``pred_score`` and/or ``anomaly_map`` of a batch.
            class_ids: ``(B,)`` retrieved class of each sample; ``None`` (or ``per_class=False``, or an
                uncalibrated processor) uses the global statistics, as anomalib's post-processor does.
            unknown: ``(B,)`` whether each image is of an unknown class (``self.unknown_class`` decides it from
                the retrieval similarity): labelled anomalous with score 1.

        Returns:
            Normalised scores and maps with labels and masks.
        """
        if class_ids is None or not self.per_class or self.num_classes == 0:
            return super().forward(predictions)
        if predictions.pred_score is None and predictions.anomaly_map is None:
            msg = "At least one of pred_score or anomaly_map must be provided."
            raise ValueError(msg)
        pred_score = (
            predictions.pred_score
            if predictions.pred_score is not None
            else torch.amax(predictions.anomaly_map, dim=(-2, -1)).reshape(-1)
        )
        pred_score, pred_label = self._calibrate(pred_score, class_ids, "image", self.normalized_image_threshold)
        anomaly_map, pred_mask = None, None
        if predictions.anomaly_map is not None:
            anomaly_map, pred_mask = self._calibrate(
                predictions.anomaly_map, class_ids, "pixel", self.normalized_pixel_threshold
            )
        if unknown is not None:
            pred_score = torch.where(unknown, torch.ones_like(pred_score), pred_score)
            pred_label = pred_label | unknown
        if not self.enable_thresholding:
            pred_label, pred_mask = None, None
        return InferenceBatch(
            pred_score=pred_score, pred_label=pred_label, anomaly_map=anomaly_map, pred_mask=pred_mask
        )

    def post_process_batch(self, batch: Any) -> None:
        """Normalise and threshold a test / predict batch in place, by its ``pred_category_id``."""
        class_ids = getattr(batch, "pred_category_id", None)
        if class_ids is None or not self.per_class or self.num_classes == 0:
            super().post_process_batch(batch)
            return
        raw = InferenceBatch(pred_score=batch.pred_score, anomaly_map=batch.anomaly_map)
        similarity = getattr(batch, "class_similarity", None)
        unknown = None
        if similarity is not None:  # reported with the batch, as forward reports them
            batch.pred_category_similarity, unknown = self.unknown_class(class_ids, similarity)
            batch.pred_unknown = unknown
        result = self.forward(raw, class_ids, unknown)
        batch.pred_score = result.pred_score
        batch.anomaly_map = result.anomaly_map
        if self.enable_thresholding:
            batch.pred_label = batch.pred_label if batch.pred_label is not None else result.pred_label
            batch.pred_mask = batch.pred_mask if batch.pred_mask is not None else result.pred_mask
