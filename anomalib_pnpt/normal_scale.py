# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A network's normal range: the largest value of its map on normal TRAINING images, refreshed as it trains.

Two maps are added only on one scale. OneNIP adds its refiner's probabilities to its reconstruction error, and a
network with a patch memory adds the memory's distances (:mod:`~anomalib_pnpt.models.memory.fusion`); each brings
the other map to the network's range ``s``, the largest value of the network's own map over ``calibration_images``
normal training images (never test images). The map changes while the network trains, so ``s`` is measured again
before every validation during fitting, at the end of training, and before any evaluation made during training
(:meth:`NormalScaleCalibration.prepare_for_evaluation`, which the learning-curve callback calls).

A module mixes :class:`NormalScaleCalibration` in and says whether it needs the scale, how its map is made and
where the scale is kept.

Example:
    >>> model.calibrate_normal_scale_from(datamodule)  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn

from anomalib_pnpt.prompt_pool import pool_dataloader, preprocessed_batches

logger = logging.getLogger(__name__)


class NormalScaleCalibration:
    """Mixin for an anomalib module: its network's normal scale, measured on training images.

    The module sets ``calibration_images`` and implements :meth:`needs_normal_scale`, :meth:`normal_map` and
    :meth:`store_normal_scale`.
    """

    calibration_images: int
    training: bool
    trainer: Any
    _calibrated_at_step: int = -1

    def needs_normal_scale(self) -> bool:
        """Whether anything is added to the network's map on its scale."""
        raise NotImplementedError

    def normal_map(self, images: torch.Tensor) -> torch.Tensor:
        """The network's own map of pre-processed images, the one the scale describes."""
        raise NotImplementedError

    def store_normal_scale(self, scale: float) -> None:
        """Keep ``scale`` where the model reads it (a buffer: checkpoints and exports carry it)."""
        raise NotImplementedError

    @torch.no_grad()
    def calibrate_normal_scale(self, batches: Iterable[tuple[torch.Tensor, Any, Any]]) -> float:
        """Set the scale to the largest :meth:`normal_map` value over ``calibration_images`` normal images.

        Args:
            batches: Pre-processed ``(images, ...)`` batches of normal images (training data), in eval mode.

        Returns:
            The new scale.
        """
        largest, seen = 0.0, 0
        for images, *_ in batches:
            largest = max(largest, float(self.normal_map(images).amax()))
            seen += len(images)
            if seen >= self.calibration_images:
                break
        if seen:
            self.store_normal_scale(largest)
        return largest

    def calibrate_normal_scale_from(self, datamodule: Any) -> float:
        """Set the scale from ``calibration_images`` normal training images of ``datamodule``.

        The images are spread evenly over the training set, so every DDP rank and every run uses the same ones
        (the shuffled loader's first batches would differ, and so would the scales).

        Args:
            datamodule: A datamodule whose ``train_dataloader()`` yields normal training images.

        Returns:
            The new scale.
        """
        was_training = self.training
        self.eval()  # type: ignore[attr-defined]
        images = pool_dataloader(datamodule.train_dataloader(), limit=self.calibration_images)
        scale = self.calibrate_normal_scale(preprocessed_batches(images, self))
        self.train(was_training)  # type: ignore[attr-defined]
        logger.info("%s normal scale calibrated on training images: %.4f", type(self).__name__, scale)
        return scale

    def _calibrate_from_training_data(self) -> None:
        if not self.needs_normal_scale() or self._calibrated_at_step == self.trainer.global_step:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        self.calibrate_normal_scale_from(datamodule)
        self._calibrated_at_step = self.trainer.global_step

    def prepare_for_evaluation(self) -> None:
        """Refresh the scale from training data (called by evaluations made during training)."""
        self._calibrate_from_training_data()

    def on_validation_start(self) -> None:
        """Calibrate before validation during fitting (the post-processor calibrates on the final maps)."""
        if self.trainer.state.fn == TrainerFn.FITTING:
            self._calibrate_from_training_data()

    def on_train_end(self) -> None:
        """Calibrate if no validation followed the last training step."""
        self._calibrate_from_training_data()
