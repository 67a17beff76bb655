# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT as an anomalib model: one model for many classes, no class label at inspection time.

PNPT (Yao et al., "Prior Normality Prompt Transformer for Multiclass Industrial Image Anomaly Detection",
IEEE TII 2024) reconstructs the features of a frozen CNN with two streams — one from the input, one from
the normality prompt of the input's class retrieved from a class-specific pool — so the network cannot
fall back to copying its input. The model builds the pool from the training images itself
(:class:`~anomalib_pnpt.prompt_pool.PromptPoolMixin`) before the first optimisation step.

Training reuses each training image's backbone features across epochs (:class:`FeatureCache`,
``cache_features=True``), since the backbone is frozen and PNPT uses no augmentation. The restoration option's
synthetic-anomaly copies (``restoration_weight``, not in the paper) are new every step and pass the backbone each time.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> from anomalib_pnpt import Pnpt  # doctest: +SKIP
    >>> from anomalib_pnpt.data import MultiClassMVTecAD  # doctest: +SKIP
    >>> model = Pnpt(preset="cpu", hidden_dim=256)  # doctest: +SKIP
    >>> engine = Engine(max_epochs=30)  # doctest: +SKIP
    >>> engine.fit(model, datamodule=MultiClassMVTecAD(root="../shared/data/industrial"))  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_pnpt.Pnpt --data anomalib_pnpt.data.MultiClassMVTecAD
    --data.root ../shared/data/industrial``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_pnpt.lr_schedule import validate_schedule
from anomalib_pnpt.models.pnpt.presets import PRESETS
from anomalib_pnpt.models.pnpt.torch_model import PnptModel
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule
from anomalib_pnpt.pre_processing import backbone_normalization
from anomalib_pnpt.presets import arguments_of, resolve_preset
from anomalib_pnpt.synthetic_anomalies import SyntheticAnomalyGenerator

logger = logging.getLogger(__name__)


class Pnpt(PromptedAnomalyModule):
    """PNPT: Prior Normality Prompt Transformer for multi-class anomaly detection.

    Every argument is plain data (so checkpoints load with ``weights_only`` and the CLI can set it). ``preset``
    chooses the defaults of the arguments that default to ``None`` (``"paper"``, ``"cpu"``, ``"lineside"``; see
    :mod:`anomalib_pnpt.models.pnpt.presets`); an explicit value wins, and checkpoints record the resolved values.
    The network's arguments (``backbone`` ... ``use_cscd``) are :class:`PnptModel`'s, documented there; the choices
    the paper leaves open are in the model's README.

    Args:
        preset: Named defaults: ``"paper"`` (WRN50, C = 760), ``"cpu"`` (offline Lite2, C = 128) or ``"lineside"``;
            ``None``: ``"paper"``, or the checkpoint's when loaded through ``ckpt_path``
            (:mod:`~anomalib_pnpt.checkpoint_arguments`).
        backbone: See :class:`PnptModel` (preset).
        layers: See :class:`PnptModel` (preset).
        pre_trained: See :class:`PnptModel`.
        weights_path: See :class:`PnptModel`.
        image_size: Input side (preset; paper: 256).
        hidden_dim: See :class:`PnptModel` (preset).
        num_semantic_tokens: See :class:`PnptModel` (preset).
        num_heads: See :class:`PnptModel`.
        num_layers: See :class:`PnptModel` (preset).
        ffn_dim: See :class:`PnptModel`.
        dropout: See :class:`PnptModel`.
        patch_sizes: See :class:`PnptModel`.
        noise_scale: See :class:`PnptModel`.
        scale_projection: See :class:`PnptModel` (preset).
        noise_target: See :class:`PnptModel` (preset).
        fusion_weight: See :class:`PnptModel`.
        sigma: See :class:`PnptModel`.
        score_top_k: See :class:`PnptModel`.
        learning_rate: AdamW learning rate (preset; paper: 1e-4).
        weight_decay: AdamW weight decay.
        lr_schedule: ``"constant"`` (the paper gives none), ``"step"`` or ``"warmup_cosine"``
            (see :mod:`anomalib_pnpt.lr_schedule`).
        warmup_steps: Warm-up optimiser steps of ``"warmup_cosine"``.
        gradient_clip: Gradient-norm clipping; ``0`` disables it (the paper does not clip).
        cache_features: Reuse training images' backbone features across epochs.
        feature_cache_mb: Memory bound of that cache in MiB (default 8 GiB; beyond it, features are computed
            every epoch, with one warning).
        use_hpe: See :class:`PnptModel` (ablation).
        use_prior: See :class:`PnptModel` (ablation).
        use_semantic_tokens: See :class:`PnptModel` (ablation).
        use_cscd: See :class:`PnptModel` (ablation).
        untrained_class_scoring: How a class added after training is scored: ``"prompt"`` (default) by its prior
            alone, ``"network"`` like the trained classes; see :class:`PnptModel`.
        prior_residual: See :class:`PnptModel` (not in the paper: ``False``).
        restoration_weight: Weight of a restoration term in the loss (not in the paper: 0). Every training batch
            then also gets a synthetic-anomaly copy (:mod:`~anomalib_pnpt.synthetic_anomalies`, as OneNIP's), and
            the network is trained to reconstruct the clean image's features from the copy's
            (:meth:`PnptModel.training_loss`). It costs a backbone pass over the copies every step.
        texture_dir: DTD-layout folder of anomaly textures for those copies; ``None`` uses noise textures.
        cutpaste_probability: Share of CutPaste(-scar) copies; the rest are Perlin blobs filled with a texture.
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
            "noise_target",
            "learning_rate",
            "weight_decay",
            "lr_schedule",
            "warmup_steps",
            "gradient_clip",
            "cache_features",
            "feature_cache_mb",
            "restoration_weight",
            "texture_dir",
            "cutpaste_probability",
            "seed",
            "rebuild_prompt_pool",
        }
    )

    # Many arguments: flat for anomalib's CLI and plain-data checkpoints; defaults as data in presets.py.
    def __init__(  # noqa: PLR0913
        self,
        preset: str | None = None,
        backbone: str | None = None,
        layers: Sequence[int] | None = None,
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int | None = None,
        hidden_dim: int | None = None,
        num_semantic_tokens: int | None = None,
        num_heads: int = 8,
        num_layers: int | None = None,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        patch_sizes: Sequence[int] | None = None,
        noise_scale: float = 20.0,
        scale_projection: str | None = None,
        noise_target: str | None = None,
        fusion_weight: float = 0.5,
        sigma: float = 4.0,
        score_top_k: int | None = None,
        learning_rate: float | None = None,
        weight_decay: float = 1e-4,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        gradient_clip: float = 0.0,
        cache_features: bool = True,
        feature_cache_mb: float | None = 8192,
        use_hpe: bool = True,
        use_prior: bool = True,
        use_semantic_tokens: bool = True,
        use_cscd: bool = True,
        untrained_class_scoring: str = "prompt",
        prior_residual: bool = False,
        restoration_weight: float = 0.0,
        texture_dir: str | None = None,
        cutpaste_probability: float = 0.5,
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
        backbone, layers = arguments["backbone"], list(arguments["layers"])
        super().__init__(
            backbone=backbone,
            image_size=arguments["image_size"],
            cache_features=cache_features,
            feature_cache_mb=feature_cache_mb,
            feature_id=f"{backbone}:{layers}:{pre_trained}:{weights_path}:{use_hpe}",
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
        self.lr_schedule = validate_schedule(lr_schedule)
        self.warmup_steps = warmup_steps
        self.gradient_clip = gradient_clip
        self.model = PnptModel(**arguments_of(PnptModel, arguments))
        if restoration_weight < 0:
            msg = f"restoration_weight must be >= 0, got {restoration_weight}."
            raise ValueError(msg)
        self.restoration_weight = restoration_weight
        self.synthesis_settings = (texture_dir, *backbone_normalization(backbone), cutpaste_probability)
        self._anomaly_generator: SyntheticAnomalyGenerator | None = None

    @property
    def anomaly_generator(self) -> SyntheticAnomalyGenerator | None:
        """The restoration term's synthetic-anomaly generator (``None`` without one).

        Made when training first needs it, so that a checkpoint loads for inspection where the texture folder is
        absent.
        """
        if self.restoration_weight > 0 and self._anomaly_generator is None:
            self._anomaly_generator = SyntheticAnomalyGenerator(*self.synthesis_settings)
        return self._anomaly_generator

    # Under DDP, each rank sums a share of the images into the CS-NPP (a class mean) and the sums are reduced.
    prompt_pool_splits_across_ranks = True

    @torch.no_grad()
    def build_prompt_pool(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[str]]],
        num_classes: int | None = None,
        reduce_across_ranks: bool = False,
    ) -> None:
        """Build the CS-NPP from ``(images, class_ids, paths)`` batches of pre-processed training images.

        Args:
            batches: Pre-processed training batches (``PromptPoolMixin.fill_prompt_pool`` supplies them).
            num_classes: Number of classes; ``None`` means 1 (single-class data).
            reduce_across_ranks: Every rank got a different share of the batches: sum over ranks before
                dividing (``fill_prompt_pool`` sets it under DDP).
        """
        pool = self.model.prompt_pool
        started = False
        for images, class_ids, paths in batches:
            features = self.cached_features(images, paths, self.model.extract_features)
            if not started:
                shapes = [level.shape[1:] for level in features]
                pool.begin(num_classes or 1, self.model.key_dim(features), shapes)
                started = True
            pool.accumulate(class_ids, self.model.global_coding(features), features)
        if not started:
            msg = "No training batch to build the prompt pool from."
            raise RuntimeError(msg)
        pool.finish(reduce_across_ranks=reduce_across_ranks)

    @torch.no_grad()
    def class_prompt_entries(
        self, images: torch.Tensor, batch_size: int = 16
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """One CS-NPP entry of a new class: its mean global coding and mean feature maps, as when building.

        Args:
            images: ``(N, 3, H, W)`` pre-processed normal images of the class.
            batch_size: Images per backbone pass.

        Returns:
            ``(key (1, D), [prompt_i (1, *shape_i)], counts (1,))``.
        """
        key_sum: torch.Tensor | None = None
        prompt_sums: list[torch.Tensor] = []
        for chunk in images.split(batch_size):
            features = self.model.extract_features(chunk)
            keys = self.model.global_coding(features).sum(0, keepdim=True)
            sums = [level.sum(0, keepdim=True) for level in features]
            key_sum = keys if key_sum is None else key_sum + keys
            prompt_sums = sums if not prompt_sums else [a + b for a, b in zip(prompt_sums, sums, strict=True)]
        count = float(len(images))
        return key_sum / count, [total / count for total in prompt_sums], torch.tensor([count])

    def training_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], Callable[[], dict[str, torch.Tensor]]]:
        """Dual cosine reconstruction loss (Eq. 7) on cached backbone features (+ the restoration term, if set).

        Args:
            batch: A training batch.

        Returns:
            ``({"loss": l}, fit measure)`` (see :meth:`PromptedAnomalyModule.training_losses`).
        """
        with self.profile("features (cache or backbone)"):
            features = self.cached_features(
                batch.image, getattr(batch, "image_path", None), self.model.extract_features
            )
        synthetic_features = None
        if self.anomaly_generator is not None:
            with self.profile("synthetic anomalies"):
                synthetic, _ = self.anomaly_generator(batch.image)
            with self.profile("backbone on synthetic copies"):
                synthetic_features = self.model.extract_features(synthetic)
        with self.profile("network forward + loss"):
            loss = self.model.training_loss(features, synthetic_features, self.restoration_weight)
        return {"loss": loss}, lambda: self.model.fit_losses(features)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the trainable (non-backbone) parameters, with the chosen learning-rate schedule."""
        return self.adamw_with_schedule()

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation (the pool is built when training starts); gradient clipping if set."""
        return {**super().trainer_arguments, "gradient_clip_val": self.gradient_clip}
