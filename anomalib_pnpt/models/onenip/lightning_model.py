# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP as an anomalib model: one normal image prompt per class, retrieved without a label.

OneNIP (Gao, "Learning to Detect Multi-class Anomalies with Just One Normal Image Prompt", ECCV 2024)
reconstructs a frozen CNN's features of the input from the features of ONE normal image of the same class
(the prompt) through a bidirectional cross-attention decoder, learns to restore synthetic anomalies to the
clean features, and sharpens the map with a supervised refiner.

The model builds its prompt pool from the training images itself (:class:`~anomalib_pnpt.prompt_pool.PromptPoolMixin`)
before the first optimisation step; at test and in export the prompt is retrieved by cosine
similarity of pooled features. The refiner's scale (``s`` in ``S = (1 - alpha) S_rec + alpha s M_hat``) is
calibrated on normal TRAINING images before every validation and at the end of training — never on test
data. The clean images' backbone features are cached across epochs (``cache_features``); the synthetic
copies are new every step (the paper), or reused with their features for ``synthetic_refresh_epochs`` epochs.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> from anomalib_pnpt import OneNip  # doctest: +SKIP
    >>> from anomalib_pnpt.data import MultiClassMVTecAD  # doctest: +SKIP
    >>> model = OneNip(preset="cpu", training={"texture_dir": "../shared/data/dtd"})  # doctest: +SKIP
    >>> engine = Engine(max_epochs=20)  # doctest: +SKIP
    >>> engine.fit(model, datamodule=MultiClassMVTecAD(root="../shared/data/industrial"))  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_pnpt.OneNip --data anomalib_pnpt.data.MultiClassMVTecAD
    --data.root ../shared/data/industrial``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_pnpt.models.onenip.presets import PRESETS
from anomalib_pnpt.models.onenip.prompt_selection import PromptSelection, closest_to_mean
from anomalib_pnpt.models.onenip.synthetic_bank import SyntheticCopyBank
from anomalib_pnpt.models.onenip.torch_model import OneNipModel
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule
from anomalib_pnpt.normal_scale import NormalScaleCalibration
from anomalib_pnpt.pre_processing import backbone_normalization
from anomalib_pnpt.presets import arguments_of, resolve_preset
from anomalib_pnpt.prompt_pool import ClassEntries
from anomalib_pnpt.synthetic_anomalies import SyntheticAnomalyGenerator
from anomalib_pnpt.training_settings import DEFAULTS, TrainingSettings, resolve_training

logger = logging.getLogger(__name__)


class OneNip(NormalScaleCalibration, PromptedAnomalyModule):
    """OneNIP: One Normal Image Prompt for multi-class anomaly detection.

    Every argument is plain data. ``preset`` sizes the network (``"paper"``, ``"cpu"`` or ``"lineside"``;
    :mod:`anomalib_pnpt.models.onenip.presets`); an argument given explicitly wins over it, and checkpoints record the
    resolved values. The rest is the paper's (stages 1-4 at stride 16, 8 heads, dropout 0.1 (the CPU presets: none on
    the attention weights), jitter 20, dynamic prompts, restoration stream and refiner, alpha 0.5, Dice weight 0.5);
    open choices are in the model's README.

    Args:
        preset: ``"paper"`` (EfficientNet-B4, hidden 256) or ``"cpu"`` (offline Lite2, hidden 128); ``None``:
            ``"paper"``, or the checkpoint's when loaded through ``ckpt_path``.
        backbone: timm backbone; its stages 1-4 make the features (preset).
        pre_trained: ImageNet weights for the backbone.
        weights_path: Local backbone weights file (a hub backbone on an offline machine).
        image_size: Input side; fixes the token grid (preset; paper: 224).
        hidden_dim: Token width (preset).
        num_encoder_layers: Encoder depth (preset).
        num_decoder_layers: Bidirectional decoder depth (preset).
        training: How it trains (:class:`~anomalib_pnpt.training_settings.TrainingSettings`; the paper's AdamW
            1e-4 with weight decay 1e-4, clipping 0.1, x0.1 at 80 % of the epochs, DTD textures from
            ``texture_dir``); a key left out takes its default.
        pre_processor: anomalib pre-processor, or ``True`` for resize + the backbone's normalisation.
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
    """

    # What only shapes training: a resumed fit takes them from the command line, not the checkpoint.
    training_arguments = frozenset({"pre_trained", "weights_path", "training"})

    # The official recipe: 1000 epochs, learning rate x0.1 at epoch 800 (see training_length.TrainingLength).
    default_max_epochs = 1000

    def __init__(  # noqa: PLR0913
        self,
        preset: str | None = None,
        backbone: str | None = None,
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int | None = None,
        hidden_dim: int | None = None,
        num_encoder_layers: int | None = None,
        num_decoder_layers: int | None = None,
        training: TrainingSettings | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        # First statement: locals() holds exactly the arguments as given (and self); None takes the preset's value.
        given = dict(locals())
        preset = preset or "paper"
        resolved = resolve_preset(PRESETS, preset, {**given, "preset": preset})
        arguments = {**PRESETS[preset], **resolved}  # and what the preset sets beyond the arguments (e.g. layers)
        defaults = {**DEFAULTS, "learning_rate": arguments["learning_rate"], "gradient_clip": 0.1}
        settings = resolve_training(defaults, training)
        backbone = arguments["backbone"]
        super().__init__(
            backbone=backbone,
            image_size=arguments["image_size"],
            cache_features=settings["cache_features"],
            feature_cache_mb=settings["feature_cache_mb"],
            feature_id=f"onenip:{backbone}:{arguments['layers']}:{pre_trained}:{weights_path}",
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
            seed=settings["seed"],
            rebuild_prompt_pool=settings["rebuild_prompt_pool"],
        )
        # The checkpoint keeps the values the preset resolved to, not only its name.
        self.hparams.update({"preset": preset} | {name: arguments[name] for name in PRESETS[preset] if name in given})
        self.record_given_arguments(given)
        self.learning_rate = settings["learning_rate"]
        self.weight_decay = settings["weight_decay"]
        self.gradient_clip = settings["gradient_clip"]
        self.lr_schedule = "step"  # the official recipe: x0.1 after 80 % of the epochs
        self.calibration_images = settings["calibration_images"]
        self.model = OneNipModel(**arguments_of(OneNipModel, arguments))
        mean, std = backbone_normalization(backbone)
        self.anomaly_generator = SyntheticAnomalyGenerator(texture_dir=settings["texture_dir"], mean=mean, std=std)
        # Synthetic copies and their features, reused for ``synthetic_refresh_epochs`` epochs (1: the paper).
        self.synthetic_bank = SyntheticCopyBank(self.feature_cache.backbone_id, arguments["synthetic_refresh_epochs"])
        self.synthesis_seconds = 0.0  # time spent generating synthetic anomalies (measured, logged)

    def _clean_features(self, images: torch.Tensor, paths: Sequence[str] | None) -> torch.Tensor:
        return self.cached_features(images, paths, lambda x: [self.model.extract_features(x)])[0]

    # ------------------------------------------------------------------ prompt pool
    @torch.no_grad()
    def build_prompt_pool(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[str]]],
        num_classes: int | None = None,
    ) -> None:
        """Choose every class's prompt images and fill the pool and the training-prompt bank.

        The rule is :mod:`~anomalib_pnpt.models.onenip.prompt_selection`'s.

        Args:
            batches: Pre-processed ``(images, class_ids, paths)`` training batches.
            num_classes: Number of classes; ``None`` means 1.
        """
        selection = PromptSelection(
            num_classes or 1, self.model.prompts_per_class, self.model.training_prompts_per_class
        )
        image_keys, image_classes = [], []  # every training image's key: the unknown-class rule compares with them
        for images, class_ids, paths in batches:
            features = self._clean_features(images, paths)
            keys = self.model.global_key(features)
            selection.add(class_ids, keys, features, paths)
            image_keys.append(keys)
            image_classes.append(class_ids)
        chosen = selection.choose()
        device = self.device
        self.model.set_prompts(
            chosen.prompt_class_ids.to(device),
            chosen.prompt_features.to(device),
            num_classes or 1,
            training_features=chosen.bank_features.to(device),
            training_class_ids=chosen.bank_class_ids.to(device),
            image_keys=torch.cat(image_keys),
            image_classes=torch.cat(image_classes),
        )

    @torch.no_grad()
    def class_prompt_entries(self, images: torch.Tensor, batch_size: int = 16) -> ClassEntries:
        """A new class's prompt images: the ``prompts_per_class`` closest to the class's mean key, as when building.

        Args:
            images: ``(N, 3, H, W)`` pre-processed normal images of the class.
            batch_size: Images per backbone pass.

        Returns:
            ``(keys (k, C), [features (k, C, h, w)], counts (k,), image_keys (N, C))``.
        """
        k = self.model.prompts_per_class
        if len(images) < k:
            msg = f"{len(images)} prompt images given; {k} are needed (prompts_per_class)."
            raise ValueError(msg)
        features = torch.cat([self.model.extract_features(chunk) for chunk in images.split(batch_size)])
        keys = self.model.global_key(features)
        chosen = closest_to_mean(keys, keys.mean(0), k)
        return ClassEntries(keys[chosen], [features[chosen]], torch.ones(k), keys)

    def prompt_pool_ready(self) -> bool:
        """Built, with the training-prompt bank too (not saved in checkpoints: rebuilt when resuming)."""
        return super().prompt_pool_ready() and self.model.training_prompts.numel() > 0

    # ------------------------------------------------------------------ training
    def training_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], Callable[[], dict[str, torch.Tensor]]]:
        """OneNIP loss: reconstruction from a same-class prompt, restoration of synthetic anomalies, Dice.

        Args:
            batch: A training batch.

        Returns:
            ``({"loss", "reconstruction", ...}, fit measure)`` (see :meth:`PromptedAnomalyModule.training_losses`).
        """
        images = batch.image
        with self.profile("features (cache or backbone)"):
            features = self._clean_features(images, getattr(batch, "image_path", None))
        class_ids = getattr(batch, "category_id", None)
        if class_ids is None:
            class_ids = torch.zeros(len(images), dtype=torch.long)
        class_ids = class_ids.to(images.device).long()
        synthetic_features = masks = None
        if self.model.use_restoration:
            synthetic_features, masks = self._synthetic_copies(images, getattr(batch, "image_path", None))
        with self.profile("network forward + loss"):
            losses = self.model.training_loss(features, class_ids, images.shape[-2:], synthetic_features, masks)
        return losses, lambda: self.model.fit_losses(features, class_ids)

    def _synthetic_copies(self, images: torch.Tensor, paths: Sequence[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and masks of synthetic-anomaly copies of ``images`` (from the bank when it is kept)."""

        def make(clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            start = time.perf_counter()
            with self.profile("synthetic anomalies"):
                synthetic, masks = self.anomaly_generator(clean)
            self.synthesis_seconds += time.perf_counter() - start
            with self.profile("backbone on synthetic copies"):
                return self.model.extract_features(synthetic), masks

        if paths is None:
            return make(images)
        return self.synthetic_bank.copies(paths, images, self.current_epoch, make)

    # ------------------------------------------------------------------ refiner scale (normal_scale.py)
    def needs_normal_scale(self) -> bool:
        """The refiner's map is added on the scale of ``S_rec``."""
        return self.model.refiner is not None

    def normal_map(self, images: torch.Tensor) -> torch.Tensor:
        """``S_rec``: the refiner scale ``s`` is its largest value on normal training images."""
        return self.model.reconstruction_error(images)

    def store_normal_scale(self, scale: float) -> None:
        """The refiner scale buffer."""
        self.model.anomaly_map_generator.refiner_scale.fill_(scale)

    def on_train_epoch_end(self) -> None:
        """Log the time spent generating synthetic anomalies this epoch."""
        self.log("synthesis_seconds", self.synthesis_seconds)
        self.synthesis_seconds = 0.0

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with the paper's schedule: x0.1 after 80 % of the epochs."""
        return self.adamw_with_schedule(drop_fraction=0.8)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Gradient clipping (paper: 0.1); no sanity validation (the pool is built when training starts)."""
        return {"num_sanity_val_steps": 0, "gradient_clip_val": self.gradient_clip}
