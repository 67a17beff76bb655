# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT as an anomalib model: one model for many classes, no class label at inspection time.

PNPT (Yao et al., "Prior Normality Prompt Transformer for Multiclass Industrial Image Anomaly Detection",
IEEE TII 2024) reconstructs the features of a frozen CNN with two streams — one from the input, one from
the normality prompt of the input's class retrieved from a class-specific pool — so the network cannot
fall back to copying its input. The model builds the pool from the training images itself
(:class:`~anomalib_pnpt.prompt_pool.PromptPoolMixin`) before the first optimisation step.

Training reuses each training image's backbone features across epochs (:class:`FeatureCache`,
``training["cache_features"]``), since the backbone is frozen and PNPT uses no augmentation. The restoration option's
synthetic-anomaly copies (``restoration_weight``, not in the paper) are new every step and pass the backbone each time.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> from anomalib_pnpt import Pnpt  # doctest: +SKIP
    >>> from anomalib_pnpt.data import MultiClassMVTecAD  # doctest: +SKIP
    >>> model = Pnpt(preset="cpu", training={"seed": 7})  # doctest: +SKIP
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

from anomalib_pnpt.models.pnpt.presets import PRESETS
from anomalib_pnpt.models.pnpt.torch_model import PnptModel
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule
from anomalib_pnpt.pre_processing import backbone_normalization
from anomalib_pnpt.presets import arguments_of, resolve_preset
from anomalib_pnpt.prompt_pool import ClassEntries
from anomalib_pnpt.synthetic_anomalies import SyntheticAnomalyGenerator
from anomalib_pnpt.training_settings import DEFAULTS, TrainingSettings, resolve_training

logger = logging.getLogger(__name__)


class Pnpt(PromptedAnomalyModule):
    """PNPT: Prior Normality Prompt Transformer for multi-class anomaly detection.

    Every argument is plain data (so checkpoints load with ``weights_only`` and the CLI can set it). ``preset``
    sizes the network (``"paper"``, ``"cpu"``, ``"lineside"``; :mod:`anomalib_pnpt.models.pnpt.presets`); an argument
    given explicitly wins over it, and checkpoints record the resolved values. The choices the paper leaves open are
    in the model's README.

    Args:
        preset: ``"paper"`` (WRN50, C = 760), ``"cpu"`` (offline Lite2, C = 128) or ``"lineside"`` (``cpu`` with
            M = 2); ``None``: ``"paper"``, or the checkpoint's when loaded through ``ckpt_path``.
        backbone: timm backbone; its stages 1-3 are the three scales (preset).
        pre_trained: ImageNet weights for the backbone.
        weights_path: Local backbone weights file (a hub backbone on an offline machine).
        image_size: Input side of the default pre-processor (preset; paper: 256).
        hidden_dim: Token width ``C`` (preset).
        num_layers: ``M`` SACE/CSCD pairs (preset).
        fusion_weight: ``w`` of Eq. 8, the prior stream's weight in the fused reconstruction (paper: 0.5).
        prior_residual: Both streams reconstruct their correction to the retrieved prior, started at zero (not in
            the paper; see :class:`PnptModel`).
        restoration_weight: Weight of a restoration term in the loss (not in the paper: 0): every training batch
            also gets a synthetic-anomaly copy (:mod:`~anomalib_pnpt.synthetic_anomalies`, as OneNIP's, textures
            from ``training["texture_dir"]``) whose clean features the network learns to put back.
        training: How it trains (:class:`~anomalib_pnpt.training_settings.TrainingSettings`: learning rate, seed,
            feature cache, ...); a key left out takes its default.
        pre_processor: anomalib pre-processor, or ``True`` for resize + the backbone's normalisation.
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
    """

    # What only shapes training: a resumed fit takes them from the command line, not the checkpoint.
    training_arguments = frozenset({"pre_trained", "weights_path", "restoration_weight", "training"})

    def __init__(  # noqa: PLR0913
        self,
        preset: str | None = None,
        backbone: str | None = None,
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int | None = None,
        hidden_dim: int | None = None,
        num_layers: int | None = None,
        fusion_weight: float = 0.5,
        prior_residual: bool = False,
        restoration_weight: float = 0.0,
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
        settings = resolve_training({**DEFAULTS, "learning_rate": arguments["learning_rate"]}, training)
        backbone = arguments["backbone"]
        super().__init__(
            backbone=backbone,
            image_size=arguments["image_size"],
            cache_features=settings["cache_features"],
            feature_cache_mb=settings["feature_cache_mb"],
            feature_id=f"{backbone}:{arguments['layers']}:{pre_trained}:{weights_path}",
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
        self.lr_schedule = "constant"  # the paper gives no schedule
        self.gradient_clip = settings["gradient_clip"]
        self.model = PnptModel(**arguments_of(PnptModel, arguments))
        if restoration_weight < 0:
            msg = f"restoration_weight must be >= 0, got {restoration_weight}."
            raise ValueError(msg)
        self.restoration_weight = restoration_weight
        self.synthesis_settings = (settings["texture_dir"], *backbone_normalization(backbone), 0.5)
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
    def class_prompt_entries(self, images: torch.Tensor, batch_size: int = 16) -> ClassEntries:
        """One CS-NPP entry of a new class: its mean global coding and mean feature maps, as when building.

        Args:
            images: ``(N, 3, H, W)`` pre-processed normal images of the class.
            batch_size: Images per backbone pass.

        Returns:
            ``(key (1, D), [prompt_i (1, *shape_i)], counts (1,), image_keys (N, D))``.
        """
        image_keys: list[torch.Tensor] = []
        prompt_sums: list[torch.Tensor] = []
        for chunk in images.split(batch_size):
            features = self.model.extract_features(chunk)
            image_keys.append(self.model.global_coding(features))
            sums = [level.sum(0, keepdim=True) for level in features]
            prompt_sums = sums if not prompt_sums else [a + b for a, b in zip(prompt_sums, sums, strict=True)]
        keys = torch.cat(image_keys)
        count = float(len(images))
        prompts = [total / count for total in prompt_sums]
        return ClassEntries(keys.mean(0, keepdim=True), prompts, torch.tensor([count]), keys)

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
