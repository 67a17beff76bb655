# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""What PNPT and OneNIP share as anomalib modules: a prompt pool, class retrieval, the feature cache.

Both models keep a pool of per-class prompts built from the training images before the first
optimisation step (:class:`~anomalib_pnpt.prompt_pool.PromptPoolMixin`), retrieve the
class of every test image from it without a label, and can reuse the frozen backbone's features of
training images across epochs. This base class holds those pieces so the two models differ only in their
networks and losses.

Post-processing is per class (:class:`~anomalib_pnpt.per_class_calibration.PerClassPostProcessor`): every
prediction carries the retrieved class (``pred_category_id``), validation calibrates each class's
normalisation and thresholds on its normal images, and ``forward`` -- the graph anomalib exports --
returns a :class:`~anomalib_pnpt.data.items.MultiClassInferenceBatch`: anomalib's four outputs, calibrated
with the retrieved class, that class as ``pred_category_id``, the similarity to its nearest training image and
whether the image is of an unknown class (:mod:`anomalib_pnpt.unknown_class`; labelled anomalous). Exports keep
these in the graph, under those names, but hidden from the graph's outputs, so anomalib's stock inferencers run
them unchanged; :func:`anomalib_pnpt.deploy.read_model` exposes them again. Classes can be added to and removed
from a trained model (``add_class`` / ``remove_class``).

A subclass sets ``self.model`` (with ``prompt_pool``, ``feature_extractor`` and ``predict(images, maps=None) ->
PromptedPrediction``) and implements ``build_prompt_pool`` and ``training_losses``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch, ImageBatch, InferenceBatch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_pnpt.captions import category_name
from anomalib_pnpt.checkpoint_arguments import CheckpointArguments
from anomalib_pnpt.class_management import ClassManagement
from anomalib_pnpt.data.items import (
    MultiClassGraphOutputs,
    MultiClassImageBatch,
    MultiClassInferenceBatch,
    PromptedPrediction,
)
from anomalib_pnpt.evaluation.retrieval_accuracy import RetrievalAccuracy
from anomalib_pnpt.feature_cache import FeatureCache
from anomalib_pnpt.graph_export import GraphExport
from anomalib_pnpt.lr_schedule import lr_scheduler_config
from anomalib_pnpt.per_class_calibration import PerClassPostProcessor
from anomalib_pnpt.pre_processing import BackbonePreProcessor
from anomalib_pnpt.prediction_writer import PredictionWriter
from anomalib_pnpt.prompt_pool import PromptPool, PromptPoolMixin
from anomalib_pnpt.training_length import TrainingLength
from anomalib_pnpt.visualizer import MultiClassImageVisualizer

logger = logging.getLogger(__name__)


class PromptedAnomalyModule(CheckpointArguments, GraphExport, ClassManagement, PromptPoolMixin, AnomalibModule):
    """Base anomalib module of the prompt-pool models.

    Args:
        backbone: timm backbone name (sets the default pre-processor's normalisation; needed with
            ``pre_processor=True``).
        image_size: Input side of the default pre-processor.
        cache_features: Reuse training images' backbone features across epochs.
        feature_id: Identity of the feature extractor for the cache key (name, layers, weights); ``None`` for a
            module that extracts no features itself (a composed module's network has its own cache).
        feature_cache_mb: Memory bound of that cache in MiB (beyond it, features are computed every epoch).
        pre_processor: anomalib pre-processor, or ``True`` for resize + the backbone's normalisation.
        post_processor: anomalib post-processor, or ``True`` for a
            :class:`~anomalib_pnpt.per_class_calibration.PerClassPostProcessor`.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
        seed: Seeds everything here (before the subclass makes its weights) and again when fitting starts.
        rebuild_prompt_pool: Build the pool when training starts even if it is built (see ``PromptPoolMixin``).
    """

    # Epochs when the trainer is given no length (see training_length.TrainingLength): the paper's recipe.
    default_max_epochs: int = 300

    # Many arguments: the arguments every prompted model shares with anomalib's AnomalibModule.
    def __init__(  # noqa: PLR0913
        self,
        backbone: str | None = None,
        image_size: int | None = None,
        cache_features: bool = False,
        feature_id: str | None = None,
        feature_cache_mb: float | None = 8192,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
        seed: int | None = None,
        rebuild_prompt_pool: bool = False,
    ) -> None:
        if seed is not None:
            seed_everything(seed, workers=True)
        if pre_processor is True:
            if backbone is None:
                msg = "pre_processor=True needs the backbone whose normalisation it applies."
                raise ValueError(msg)
            size = (image_size, image_size) if image_size else None
            pre_processor = self.configure_pre_processor(image_size=size, backbone=backbone)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.cache_features = cache_features
        self.seed = seed
        self.rebuild_prompt_pool = rebuild_prompt_pool
        self.feature_cache = FeatureCache(feature_id, max_mb=feature_cache_mb) if feature_id is not None else None
        self.prompt_categories: list[str] = []
        self.trained_categories: list[str] = []  # the classes the network was trained with (add_class keeps it)
        self._warned_unseen: set[str] = set()

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        backbone: str = "wide_resnet50_2",
    ) -> PreProcessor:
        """Resize to ``image_size`` (default 256 x 256) and normalise with the backbone's ImageNet statistics.

        Args:
            image_size: Target size.
            backbone: timm name whose pretrained config gives mean and std (EfficientNet-Lite: 0.5 / 0.5).

        Returns:
            The pre-processor.
        """
        return BackbonePreProcessor(backbone, image_size=image_size or (256, 256))

    @classmethod
    def configure_visualizer(cls) -> MultiClassImageVisualizer:
        """Anomalib's image visualizer with the retrieved class, score and verdict under every picture."""
        return MultiClassImageVisualizer()

    @classmethod
    def configure_post_processor(cls) -> PostProcessor:
        """Per-class normalisation and thresholds, calibrated on normal validation images."""
        return PerClassPostProcessor()

    def forward(self, batch: torch.Tensor, *args, **kwargs) -> MultiClassInferenceBatch:  # noqa: ANN002, ANN003
        """Pre-process, predict and post-process with the retrieved class's calibration (the exported graph).

        Args:
            batch: ``(B, 3, H, W)`` images in ``[0, 1]``.
            *args: Unused.
            **kwargs: Unused.

        Returns:
            Normalised score, label, map and mask, and the retrieved class index of every image.
        """
        del args, kwargs
        # Inference only (training goes through ``training_step``): without gradients, a stock
        # ``TorchInferencer``'s outputs convert to numpy. Tracing for export keeps the graph free of the switch.
        with nullcontext() if self.tracing_graph else torch.no_grad():
            images = self.pre_processor(batch) if self.pre_processor else batch
            raw = self.predict_images(images)
            class_ids, unknown = raw.class_id, raw.unknown
            predictions = InferenceBatch(pred_score=raw.pred_score, anomaly_map=raw.anomaly_map)
            if isinstance(self.post_processor, PerClassPostProcessor):
                predictions = self.post_processor(predictions, class_ids, unknown)
            elif self.post_processor:
                predictions = self.post_processor(predictions)
        similarity = raw.class_similarity
        extra = {"pred_category_id": class_ids, "pred_category_similarity": similarity, "pred_unknown": unknown}
        if self.tracing_graph:  # named graph outputs (then hidden from stock inferencers, see ``to_onnx``)
            return MultiClassGraphOutputs(*predictions, **extra)
        return MultiClassInferenceBatch(*predictions, **extra)

    def setup(self, stage: str) -> None:
        """Seed the run's random draws (pool, shuffling, noise, synthetic anomalies) when the model has a seed.

        Args:
            stage: Lightning stage; only ``"fit"`` is seeded.
        """
        if stage == "fit" and self.seed is not None:
            seed_everything(self.seed, workers=True)

    def configure_callbacks(self) -> Sequence[Callback]:
        """Anomalib's component callbacks, the training length and the predictions file.

        The prediction writer comes after anomalib's post-processor callback: it writes post-processed values.
        """
        callbacks = super().configure_callbacks()
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        return [*callbacks, TrainingLength(self.default_max_epochs), PredictionWriter()]

    @property
    def prompt_pool(self) -> PromptPool:
        """The network's prompt pool, which this module builds (``PromptPoolMixin``)."""
        return self.model.prompt_pool

    def attached_trainer(self) -> Any:
        """The trainer this module is attached to, or ``None`` (Lightning's ``trainer`` raises then)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def adamw_with_schedule(self, drop_fraction: float = 0.8) -> dict[str, Any]:
        """AdamW over the network's trainable parameters with the model's learning-rate schedule.

        Uses the subclass's ``learning_rate``, ``weight_decay`` and ``lr_schedule``.

        Args:
            drop_fraction: Fraction of the epochs after which the ``"step"`` schedule divides the rate by 10.

        Returns:
            Lightning's ``configure_optimizers`` dictionary.
        """
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)
        trainer = self.attached_trainer()
        max_epochs = trainer.max_epochs if trainer is not None else None
        scheduler = lr_scheduler_config(optimizer, self.lr_schedule, max_epochs=max_epochs, drop_fraction=drop_fraction)
        return {"optimizer": optimizer} if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    def profile(self, action: str) -> AbstractContextManager:
        """Time ``action`` with the trainer's profiler (``Engine(profiler="simple")``); a no-op otherwise.

        The training steps mark their parts (features from the cache or the backbone, synthetic anomalies,
        network forward) so a profile of an epoch splits what Lightning reports as one ``training_step``.

        Args:
            action: Name of the timed part, e.g. ``"features"``.

        Returns:
            A context manager.
        """
        trainer = self.attached_trainer()
        return trainer.profiler.profile(f"[{type(self).__name__}] {action}") if trainer is not None else nullcontext()

    # Training batches per epoch on which the network's fit is measured against its prior (``log_fit``).
    fit_batches: int = 8

    def training_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], Callable[[], dict[str, torch.Tensor]]]:
        """The batch's losses (``"loss"`` is optimised, the others logged) and how to measure the network's fit.

        Args:
            batch: A training batch.

        Returns:
            ``(losses, measure)``: ``measure()`` returns ``{"network": ..., <reference name>: ...}`` (:meth:`log_fit`).
        """
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int = 0) -> STEP_OUTPUT:
        """Optimise :meth:`training_losses`; log every loss (``train_<name>``) and the network's fit (:meth:`log_fit`).

        Args:
            batch: A training batch.
            batch_idx: Its index in the epoch.

        Returns:
            ``{"loss": ...}``.
        """
        losses, measure = self.training_losses(batch)
        size = len(batch.image)
        self.log("train_loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train_{name}", value, on_epoch=True, batch_size=size)
        self.log_fit(batch_idx, measure)
        return {"loss": losses["loss"]}

    def predict_images(self, images: torch.Tensor) -> PromptedPrediction:
        """Raw prediction of pre-processed images: the network's (a composed model adds to it).

        Args:
            images: ``(B, 3, H, W)`` pre-processed images.

        Returns:
            Scores, maps, retrieved classes and class similarities, before calibration.
        """
        return self.model.predict(images)

    def log_fit(self, batch_idx: int, measure: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Log the network's noise-free loss and its prior's on the epoch's first ``fit_batches`` training batches.

        ``fit_network_loss`` below ``fit_prior_loss`` (PNPT: the class mean; OneNIP: the prompt) means the network
        reconstructs its training images better than the normal reference it is given: it has learnt something.
        The CSV logger of the shipped configs records both per epoch (the learning curve against the prior).

        Args:
            batch_idx: Index of the training batch in its epoch.
            measure: Returns ``{"network": ..., <reference name>: ...}`` for the batch.
        """
        if batch_idx >= self.fit_batches:
            return
        for name, value in measure().items():
            self.log(f"fit_{name}_loss", value, on_step=False, on_epoch=True)

    def cached_features(
        self,
        images: torch.Tensor,
        paths: Sequence[str] | None,
        extract: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        """Backbone features of training images, from the cache when enabled and the paths are known.

        Args:
            images: Pre-processed images.
            paths: Their files (the cache key); ``None`` computes without the cache.
            extract: The frozen feature extractor, returning a list of maps.
        """
        if self.cache_features and paths is not None and self.feature_cache is not None:
            return self.feature_cache.features(paths, images, extract)
        return extract(images)

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:  # noqa: ANN002, ANN003
        """Predict scores, maps and retrieved classes (the post-processor calibrates each class on them)."""
        del args, kwargs
        return self._with_predictions(batch, self.predict_images(batch.image))

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:
        """Raw predictions with the retrieved class, as in validation and test.

        anomalib's default step drops the class, so ``engine.predict`` / ``anomalib predict`` fell back to the
        global threshold; with it they decide per class like ``forward`` and the export.
        """
        del batch_idx, dataloader_idx
        return self._with_predictions(batch, self.predict_images(batch.image))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Give a stock anomalib image batch the class fields (e.g. ``anomalib predict``'s ``PredictDataset``).

        Lightning hands the batch returned here to the step AND to every callback, and anomalib's steps update
        the batch in place, which its callbacks (visualizer, writers) then read: converting here, before the
        step, keeps that one object, now with fields for the retrieved class.

        Args:
            batch: The batch on the model's device.
            dataloader_idx: Index of its dataloader.

        Returns:
            A :class:`~anomalib_pnpt.data.items.MultiClassImageBatch` for image batches; anything else unchanged.
        """
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        return MultiClassImageBatch.from_batch(batch) if isinstance(batch, ImageBatch) else batch

    def _with_predictions(self, batch: Batch, predictions: PromptedPrediction) -> MultiClassImageBatch:
        """The batch, updated in place, with raw predictions, the retrieved class, its similarity, the unknown flag.

        The class is given by index and by name. One path for validation, test and predict; the post-processor
        calibrates and decides from these fields, and the evaluator's
        :class:`~anomalib_pnpt.evaluation.RetrievalAccuracy` reads the name.
        """
        names = [category_name(self.prompt_categories, int(i)) for i in predictions.class_id.reshape(-1).cpu()]
        return MultiClassImageBatch.from_batch(batch).update(
            pred_score=predictions.pred_score,
            anomaly_map=predictions.anomaly_map,
            pred_category_id=predictions.class_id,
            pred_category=names if self.prompt_categories else None,
            pred_category_similarity=predictions.class_similarity,
            pred_unknown=predictions.unknown,
        )

    def on_test_start(self) -> None:
        """Forget which unseen classes an earlier test run warned about."""
        self._warned_unseen = set()

    def test_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:  # noqa: ANN002, ANN003
        """Predict (the evaluator counts the retrievals); warn once per test class the pool does not hold."""
        del args, kwargs
        names = getattr(batch, "category", None)
        unseen = sorted(set(names or []) - set(self.prompt_categories)) if self.prompt_categories else []
        if unseen and not self._warned_unseen.issuperset(unseen):
            self._warned_unseen.update(unseen)
            logger.warning(
                "Test class(es) %s are not in this model's prompt pool %s: their images are scored against the "
                "nearest known class and count as retrieval misses.",
                unseen,
                self.prompt_categories,
            )
        return self._with_predictions(batch, self.predict_images(batch.image))

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Anomalib's default test metrics and the class-retrieval accuracy (``retrieval_accuracy``)."""
        default = AnomalibModule.configure_evaluator()
        return Evaluator(test_metrics=[*default.test_metrics, RetrievalAccuracy()])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save the class names of the prompt pool and those the network was trained with."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["prompt_categories"] = list(self.prompt_categories)
        checkpoint["trained_categories"] = list(self.trained_categories)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Become the checkpoint's model (``checkpoint_arguments``), then restore its class names."""
        self.adopt_checkpoint_arguments(checkpoint)
        super().on_load_checkpoint(checkpoint)
        self.prompt_categories = list(checkpoint.get("prompt_categories", []))
        self.trained_categories = list(checkpoint.get("trained_categories", []))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args, **kwargs) -> PromptedAnomalyModule:  # noqa: ANN002, ANN003
        """Anomalib's loader: the checkpoint's arguments, with ``kwargs`` overriding them.

        Args:
            checkpoint_path: The checkpoint.
            *args: anomalib's positional arguments.
            **kwargs: anomalib's keyword arguments and constructor overrides.

        Returns:
            The model.
        """
        with cls.overrides_win():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on normal images only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation: the prompt pool is only built when training starts."""
        return {"num_sanity_val_steps": 0}
