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

The statistics live in :class:`~anomalib_pnpt.calibration_table.CalibrationTable` (one row per class and one
over all classes, computed with the same rule: the fallback for a class without validation images, and with
``per_class=False`` a single global threshold for comparison). An image the prompt pool finds of no known
class (:mod:`anomalib_pnpt.unknown_class`) is labelled anomalous with score 1 here. This class is the
anomalib-facing part: the ``PostProcessor`` callbacks that collect normal validation predictions and post-process
test and predict batches, and the ``forward`` the exported graph contains. It writes none of anomalib's
``PostProcessor`` state: anomalib's global threshold buffers stay unused, and its ``image_threshold`` /
``pixel_threshold`` properties report the table's overall row.

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
from typing import Any

import torch
from anomalib.data import InferenceBatch
from anomalib.post_processing import PostProcessor
from lightning.pytorch import LightningModule, Trainer

from anomalib_pnpt.calibration_table import STATISTICS, CalibrationTable
from anomalib_pnpt.distributed import gather_samples, is_distributed

logger = logging.getLogger(__name__)


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
        self.table = CalibrationTable(image_quantile, pixel_quantile)
        self.per_class = per_class
        self._normal_scores: list[torch.Tensor] = []
        self._normal_maps: list[torch.Tensor] = []
        self._normal_class_ids: list[torch.Tensor] = []
        self._normal_paths: list[str] = []
        self._skipped_anomalous = 0

    # What anomalib's checkpoint_config does not know of: the per-class rule (its documented extension pair).
    own_config_keys = ("image_quantile", "pixel_quantile", "per_class")

    def checkpoint_config(self) -> dict[str, Any]:
        """Anomalib's plain-data configuration plus the per-class rule (quantiles, per-class switch)."""
        return {**super().checkpoint_config(), **{key: getattr(self, key) for key in self.own_config_keys}}

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Restore :meth:`checkpoint_config`'s values.

        Args:
            config: What :meth:`checkpoint_config` returned.
        """
        super().load_checkpoint_config(config)
        for key in self.own_config_keys:
            if key in config:
                setattr(self, key, config[key])

    @property
    def image_quantile(self) -> float:
        """Quantile of a class's normal image scores used as its threshold (the table's rule)."""
        return self.table.image_quantile

    @image_quantile.setter
    def image_quantile(self, value: float) -> None:
        self.table.image_quantile = value

    @property
    def pixel_quantile(self) -> float:
        """Quantile of a class's normal anomaly-map values used as its pixel threshold (the table's rule)."""
        return self.table.pixel_quantile

    @pixel_quantile.setter
    def pixel_quantile(self, value: float) -> None:
        self.table.pixel_quantile = value

    @property
    def image_threshold(self) -> torch.Tensor:
        """The raw image threshold over all classes (anomalib's property; the table's overall row)."""
        return self.table.overall_value("image_threshold")

    @property
    def pixel_threshold(self) -> torch.Tensor:
        """The raw pixel threshold over all classes (anomalib's property; the table's overall row)."""
        return self.table.overall_value("pixel_threshold")

    @property
    def num_classes(self) -> int:
        """Number of classes with per-class statistics (0 before calibration)."""
        return self.table.num_classes

    def class_statistics(self) -> dict[str, torch.Tensor]:
        """Per-class statistics as a dict of ``(num_classes,)`` tensors (NaN where a class had no data)."""
        return {name: self.table.column(name) for name in STATISTICS}

    # ---------------------------------------------------------------- calibration (validation hooks)
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting this validation run's normal predictions."""
        del trainer, pl_module
        self._normal_scores, self._normal_maps, self._normal_class_ids, self._normal_paths = [], [], [], []
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
        )
        self._normal_scores, self._normal_maps, self._normal_class_ids, self._normal_paths = [], [], [], []

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
        }
        paths = self._normal_paths if len(self._normal_paths) == len(columns["score"]) else None
        merged, gathered_paths = gather_samples(trainer, columns, paths)
        self._normal_scores, self._normal_class_ids = [merged["score"]], [merged["class_id"]]
        self._normal_maps = [merged["map"]] if merged["map"] is not None else []
        self._normal_paths = gathered_paths or []

    def set_statistics(
        self,
        class_ids: torch.Tensor,
        scores: torch.Tensor,
        maps: torch.Tensor | None,
        num_classes: int,
    ) -> None:
        """Calibrate from the raw predictions of normal images.

        Args:
            class_ids: ``(N,)`` retrieved class of each image.
            scores: ``(N,)`` raw image scores.
            maps: ``(N, ...)`` raw anomaly maps, or ``None`` for a classification model.
            num_classes: Size of the per-class tables (the prompt pool's class count).
        """
        self.table.fit(class_ids, scores, maps, num_classes)

    def append_class(self, scores: torch.Tensor, maps: torch.Tensor | None) -> None:
        """Calibrate one more class (the last index) from raw predictions of its normal images.

        The global statistics stay those of the original calibration.

        Args:
            scores: ``(N,)`` raw image scores.
            maps: ``(N, ...)`` raw anomaly maps, or ``None``.
        """
        self.table.append(scores, maps)

    def remove_class(self, index: int) -> None:
        """Drop class ``index``'s statistics; later classes move up.

        Args:
            index: Class index.
        """
        self.table.remove(index)

    # ---------------------------------------------------------------- application
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
            unknown: ``(B,)`` whether each image is of an unknown class (the prompt pool decides it, see
                :mod:`anomalib_pnpt.unknown_class`): labelled anomalous with score 1.

        Returns:
            Normalised scores and maps with labels and masks.
        """
        if not self.per_class:
            class_ids = None  # the overall row: one threshold for all classes, as anomalib's post-processor
        if predictions.pred_score is None and predictions.anomaly_map is None:
            msg = "At least one of pred_score or anomaly_map must be provided."
            raise ValueError(msg)
        pred_score = (
            predictions.pred_score
            if predictions.pred_score is not None
            else torch.amax(predictions.anomaly_map, dim=(-2, -1)).reshape(-1)
        )
        pred_score, pred_label = self.table.calibrate(
            pred_score, class_ids, "image", self.normalized_image_threshold, self.enable_normalization
        )
        anomaly_map, pred_mask = None, None
        if predictions.anomaly_map is not None:
            anomaly_map, pred_mask = self.table.calibrate(
                predictions.anomaly_map, class_ids, "pixel", self.normalized_pixel_threshold, self.enable_normalization
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
        raw = InferenceBatch(pred_score=batch.pred_score, anomaly_map=batch.anomaly_map)
        result = self.forward(raw, class_ids, getattr(batch, "pred_unknown", None))
        batch.pred_score = result.pred_score
        batch.anomaly_map = result.anomaly_map
        if self.enable_thresholding:
            batch.pred_label = batch.pred_label if batch.pred_label is not None else result.pred_label
            batch.pred_mask = batch.pred_mask if batch.pred_mask is not None else result.pred_mask
