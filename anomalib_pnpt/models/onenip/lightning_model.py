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
    >>> model = OneNip(preset="cpu", texture_dir="../shared/data/dtd")  # doctest: +SKIP
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

from anomalib_pnpt.lr_schedule import validate_schedule
from anomalib_pnpt.models.onenip.presets import PRESETS
from anomalib_pnpt.models.onenip.prompt_selection import PromptSelection, closest_to_mean
from anomalib_pnpt.models.onenip.synthetic_bank import SyntheticCopyBank
from anomalib_pnpt.models.onenip.torch_model import OneNipModel
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule
from anomalib_pnpt.normal_scale import NormalScaleCalibration
from anomalib_pnpt.pre_processing import backbone_normalization
from anomalib_pnpt.presets import arguments_of, resolve_preset
from anomalib_pnpt.synthetic_anomalies import SyntheticAnomalyGenerator

logger = logging.getLogger(__name__)


class OneNip(NormalScaleCalibration, PromptedAnomalyModule):
    """OneNIP: One Normal Image Prompt for multi-class anomaly detection.

    Every argument is plain data. ``preset`` chooses the defaults of the arguments that default to ``None``
    (``"paper"`` or ``"cpu"``; see :mod:`anomalib_pnpt.models.onenip.presets`); an explicit value wins, and
    checkpoints record the resolved values. The network's arguments (``backbone`` ... ``dice_per_image``) are
    :class:`OneNipModel`'s, documented there; open choices are in the model's README.

    Args:
        preset: Named defaults: ``"paper"`` (EfficientNet-B4, hidden 256) or ``"cpu"`` (offline Lite2, hidden 128);
            ``None``: ``"paper"``, or the checkpoint's when loaded through ``ckpt_path``
            (:mod:`~anomalib_pnpt.checkpoint_arguments`).
        backbone: See :class:`OneNipModel` (preset).
        layers: See :class:`OneNipModel`.
        pre_trained: See :class:`OneNipModel`.
        weights_path: See :class:`OneNipModel`.
        image_size: See :class:`OneNipModel` (preset).
        hidden_dim: See :class:`OneNipModel` (preset).
        num_heads: See :class:`OneNipModel`.
        num_encoder_layers: See :class:`OneNipModel` (preset).
        num_decoder_layers: See :class:`OneNipModel` (preset).
        ffn_dim: See :class:`OneNipModel` (preset).
        dropout: See :class:`OneNipModel`.
        neighbor_size: See :class:`OneNipModel`.
        noise_scale: See :class:`OneNipModel`.
        prompt_mode: See :class:`OneNipModel` (Table 4a ablation).
        prompts_per_class: See :class:`OneNipModel`.
        training_prompts_per_class: See :class:`OneNipModel`.
        use_restoration: See :class:`OneNipModel` (Table 4a ablation).
        use_refiner: See :class:`OneNipModel` (Table 4a ablation).
        refiner_channels: See :class:`OneNipModel`.
        alpha: See :class:`OneNipModel`.
        score_pool: See :class:`OneNipModel`.
        dice_weight: See :class:`OneNipModel`.
        dice_per_image: See :class:`OneNipModel`.
        untrained_class_scoring: How a class added after training is scored: ``"prompt"`` (default) by its prompt
            images alone, ``"network"`` like the trained classes; see :class:`OneNipModel`.
        texture_dir: DTD-layout folder of anomaly textures; ``None`` uses noise textures.
        cutpaste_probability: Share of CutPaste(-scar) synthetic anomalies (paper: 0.5).
        grey_texture_probability: Share of texture anomalies whose texture is made grey (paper: 0; DTD's
            colours are a shortcut on grey parts).
        synthetic_refresh_epochs: Epochs each training image's synthetic copy (and its backbone features) is
            reused before a new one is made (preset; paper: 1, a new copy every step; see ``synthetic_bank.py``).
        calibration_images: Normal training images used to calibrate the refiner scale.
        learning_rate: AdamW learning rate (preset; paper: 1e-4).
        weight_decay: AdamW weight decay (paper: 1e-4).
        gradient_clip: Gradient-norm clipping (paper: 0.1).
        lr_drop_fraction: Learning rate x0.1 after this fraction of the epochs (paper: 800 of 1000).
        lr_schedule: ``"step"`` (the paper's), ``"warmup_cosine"`` or ``"constant"`` (see
            :mod:`anomalib_pnpt.lr_schedule`).
        warmup_steps: Warm-up optimiser steps of ``"warmup_cosine"``.
        cache_features: Reuse the clean training images' backbone features across epochs.
        feature_cache_mb: Memory bound of that cache in MiB (default 8 GiB; beyond it, features are computed
            every epoch, with one warning).
        pre_processor: anomalib pre-processor, or ``True`` for resize + the backbone's normalisation.
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
        seed: Seed of the weights' initialisation and of training's random draws (``None``: not seeded).
            anomalib 2.7's CLI ignores ``--seed_everything``; ``--model.seed`` makes a run reproducible.
        rebuild_prompt_pool: Build the prompt pool from the training data even if the checkpoint has one
            (e.g. resuming on new data).
    """

    # What only shapes training: a resumed fit takes them from the command line, not the checkpoint.
    training_arguments = frozenset(
        {
            "pre_trained",
            "weights_path",
            "dropout",
            "noise_scale",
            "training_prompts_per_class",
            "dice_weight",
            "dice_per_image",
            "texture_dir",
            "cutpaste_probability",
            "grey_texture_probability",
            "synthetic_refresh_epochs",
            "calibration_images",
            "learning_rate",
            "weight_decay",
            "gradient_clip",
            "lr_drop_fraction",
            "lr_schedule",
            "warmup_steps",
            "cache_features",
            "feature_cache_mb",
            "seed",
            "rebuild_prompt_pool",
        }
    )

    # The official recipe: 1000 epochs, learning rate x0.1 at epoch 800 (see training_length.TrainingLength).
    default_max_epochs = 1000

    # Many arguments: flat for anomalib's CLI and plain-data checkpoints; defaults as data in presets.py.
    def __init__(  # noqa: PLR0913
        self,
        preset: str | None = None,
        backbone: str | None = None,
        layers: Sequence[int] = (0, 1, 2, 3),
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int | None = None,
        hidden_dim: int | None = None,
        num_heads: int = 8,
        num_encoder_layers: int | None = None,
        num_decoder_layers: int | None = None,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        neighbor_size: int | None = None,
        noise_scale: float = 20.0,
        prompt_mode: str = "dynamic",
        prompts_per_class: int = 1,
        training_prompts_per_class: int = 32,
        use_restoration: bool = True,
        use_refiner: bool = True,
        refiner_channels: int = 128,
        alpha: float = 0.5,
        score_pool: int = 16,
        dice_weight: float = 0.5,
        dice_per_image: bool = False,
        untrained_class_scoring: str = "prompt",
        texture_dir: str | None = None,
        cutpaste_probability: float = 0.5,
        grey_texture_probability: float = 0.0,
        synthetic_refresh_epochs: int | None = None,
        calibration_images: int = 256,
        learning_rate: float | None = None,
        weight_decay: float = 1e-4,
        gradient_clip: float = 0.1,
        lr_drop_fraction: float = 0.8,
        lr_schedule: str = "step",
        warmup_steps: int = 0,
        cache_features: bool = True,
        feature_cache_mb: float | None = 8192,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
        seed: int | None = None,
        rebuild_prompt_pool: bool = False,
    ) -> None:
        # First statement: locals() holds exactly the arguments as given (and self); None takes the preset's value.
        given = dict(locals())
        preset = preset or "paper"
        arguments = resolve_preset(PRESETS, preset, {**given, "preset": preset})
        backbone = arguments["backbone"]
        super().__init__(
            backbone=backbone,
            image_size=arguments["image_size"],
            cache_features=cache_features,
            feature_cache_mb=feature_cache_mb,
            feature_id=f"onenip:{backbone}:{list(layers)}:{pre_trained}:{weights_path}",
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
            seed=seed,
            rebuild_prompt_pool=rebuild_prompt_pool,
        )
        # The checkpoint keeps the values the preset resolved to, not only its name.
        self.hparams.update({"preset": preset} | {name: arguments[name] for name in PRESETS[preset]})
        self.record_given_arguments(given)
        self.learning_rate = arguments["learning_rate"]
        self.weight_decay = weight_decay
        self.gradient_clip = gradient_clip
        self.lr_drop_fraction = lr_drop_fraction
        self.lr_schedule = validate_schedule(lr_schedule)
        self.warmup_steps = warmup_steps
        self.calibration_images = calibration_images
        self.model = OneNipModel(**arguments_of(OneNipModel, arguments))
        mean, std = backbone_normalization(backbone)
        self.anomaly_generator = SyntheticAnomalyGenerator(
            texture_dir=texture_dir,
            mean=mean,
            std=std,
            cutpaste_probability=cutpaste_probability,
            grey_texture_probability=grey_texture_probability,
        )
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
        for images, class_ids, paths in batches:
            features = self._clean_features(images, paths)
            selection.add(class_ids, self.model.global_key(features), features, paths)
        chosen = selection.choose()
        device = self.device
        self.model.set_prompts(
            chosen.prompt_class_ids.to(device),
            chosen.prompt_features.to(device),
            num_classes or 1,
            training_features=chosen.bank_features.to(device),
            training_class_ids=chosen.bank_class_ids.to(device),
        )

    @torch.no_grad()
    def class_prompt_entries(
        self, images: torch.Tensor, batch_size: int = 16
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """A new class's prompt images: the ``prompts_per_class`` closest to the class's mean key, as when building.

        Args:
            images: ``(N, 3, H, W)`` pre-processed normal images of the class.
            batch_size: Images per backbone pass.

        Returns:
            ``(keys (k, C), [features (k, C, h, w)], counts (k,))``.
        """
        k = self.model.prompts_per_class
        if len(images) < k:
            msg = f"{len(images)} prompt images given; {k} are needed (prompts_per_class)."
            raise ValueError(msg)
        features = torch.cat([self.model.extract_features(chunk) for chunk in images.split(batch_size)])
        keys = self.model.global_key(features)
        chosen = closest_to_mean(keys, keys.mean(0), k)
        return keys[chosen], [features[chosen]], torch.ones(k)

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
        """AdamW with the chosen schedule (default, the paper's: x0.1 after ``lr_drop_fraction`` of the epochs)."""
        return self.adamw_with_schedule(drop_fraction=self.lr_drop_fraction)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Gradient clipping (paper: 0.1); no sanity validation (the pool is built when training starts)."""
        return {"num_sanity_val_steps": 0, "gradient_clip_val": self.gradient_clip}
