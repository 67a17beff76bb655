# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT as an anomalib model: one model for many classes, no class label at inspection time.

PNPT (Yao et al., "Prior Normality Prompt Transformer for Multiclass Industrial Image Anomaly Detection",
IEEE TII 2024) reconstructs the features of a frozen CNN with two streams — one from the input, one from
the normality prompt of the input's class retrieved from a class-specific pool — so the network cannot
fall back to copying its input. The model builds the pool from the training images itself
(:class:`~anomalib_pnpt.prompt_pool.PromptPoolMixin`) before the first optimisation step.

Training reuses each training image's backbone features across epochs (:class:`FeatureCache`,
``cache_features=True``), since the backbone is frozen and PNPT uses no augmentation.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> from anomalib_pnpt import Pnpt  # doctest: +SKIP
    >>> from anomalib_pnpt.data import MultiClassMVTecAD  # doctest: +SKIP
    >>> model = Pnpt(backbone="tf_efficientnet_lite2", hidden_dim=256)  # doctest: +SKIP
    >>> engine = Engine(max_epochs=30)  # doctest: +SKIP
    >>> engine.fit(model, datamodule=MultiClassMVTecAD(root="../shared/data/industrial"))  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_pnpt.Pnpt --data anomalib_pnpt.data.MultiClassMVTecAD
    --data.root ../shared/data/industrial``
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_pnpt.lr_schedule import validate_schedule
from anomalib_pnpt.models.pnpt.torch_model import PnptModel
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule

logger = logging.getLogger(__name__)


class Pnpt(PromptedAnomalyModule):
    """PNPT: Prior Normality Prompt Transformer for multi-class anomaly detection.

    Every argument is plain data (so checkpoints load with ``weights_only`` and the CLI can set it). The
    defaults are the paper's settings; the choices the paper leaves open are documented in the model's
    README and in :class:`PnptModel`.

    Args:
        backbone: timm backbone (paper: ``wide_resnet50_2``; offline: ``tf_efficientnet_lite2``).
        layers: Backbone feature indices (paper: first three stages).
        pre_trained: Load ImageNet backbone weights.
        weights_path: Local backbone weights for hub backbones on an offline machine.
        image_size: Input side (paper: 256).
        hidden_dim: Token width ``C`` (paper: 760).
        num_semantic_tokens: ``N`` (paper: 40).
        num_heads: Attention heads (paper: 8).
        num_layers: ``M`` SACE/CSCD pairs (paper: 4).
        ffn_dim: FFN width (paper: not given; default ``4 * hidden_dim``).
        dropout: Attention/FFN dropout.
        patch_sizes: HPE patch sizes (default: growing so all levels reach the coarsest grid).
        noise_scale: HPE feature-jitter strength during training.
        scale_projection: HPE scale merge: ``"per_scale"`` (paper Sec. III-C: each scale to its slice of ``C``)
            or ``"joint"`` (one linear map over all scales' patch vectors).
        noise_target: Where the jitter goes: ``"embedding"`` (paper: on ``E``) or ``"patch"`` (patch vectors).
        fusion_weight: Prior stream weight in the fused map (Eq. 8).
        sigma: Gaussian smoothing of the anomaly map.
        score_top_k: Image score = mean of the top-k map pixels; ``None`` = max.
        learning_rate: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay.
        lr_schedule: ``"constant"`` (the paper gives none), ``"step"`` or ``"warmup_cosine"``
            (see :mod:`anomalib_pnpt.lr_schedule`).
        warmup_steps: Warm-up optimiser steps of ``"warmup_cosine"``.
        gradient_clip: Gradient-norm clipping; ``0`` disables it (the paper does not clip).
        cache_features: Reuse training images' backbone features across epochs.
        feature_cache_mb: Memory bound of that cache in MiB (default 8 GiB; beyond it, features are computed
            every epoch, with one warning).
        use_hpe: Ablation: ``False`` = last backbone level only.
        use_prior: Ablation: ``False`` = single stream, no CS-NPP.
        use_semantic_tokens: Ablation: ``False`` = no SACE semantic tokens.
        use_cscd: Ablation: ``False`` = no CSCD.
        pre_processor: anomalib pre-processor, or ``True`` for resize + the backbone's normalisation.
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
        seed: Seed of the weights' initialisation and of training's random draws (``None``: not seeded).
        rebuild_prompt_pool: Build the prompt pool from the training data even if the checkpoint has one
            (e.g. resuming on new data).
            anomalib 2.7's CLI ignores ``--seed_everything``; ``--model.seed`` makes a run reproducible.
    """

    # The CS-NPP is a class mean: under DDP each rank sums a share of the images and the sums are reduced.
    prompt_pool_splits_across_ranks = True

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[int] = (1, 2, 3),
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int = 256,
        hidden_dim: int = 760,
        num_semantic_tokens: int = 40,
        num_heads: int = 8,
        num_layers: int = 4,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        patch_sizes: Sequence[int] | None = None,
        noise_scale: float = 20.0,
        scale_projection: str = "per_scale",
        noise_target: str = "embedding",
        fusion_weight: float = 0.5,
        sigma: float = 4.0,
        score_top_k: int | None = None,
        learning_rate: float = 1e-4,
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
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
        seed: int | None = None,
        rebuild_prompt_pool: bool = False,
    ) -> None:
        super().__init__(
            backbone=backbone,
            image_size=image_size,
            cache_features=cache_features,
            feature_cache_mb=feature_cache_mb,
            feature_id=f"{backbone}:{list(layers)}:{pre_trained}:{weights_path}:{use_hpe}",
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
            seed=seed,
            rebuild_prompt_pool=rebuild_prompt_pool,
        )
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_schedule = validate_schedule(lr_schedule)
        self.warmup_steps = warmup_steps
        self.gradient_clip = gradient_clip
        self.model = PnptModel(
            backbone=backbone,
            layers=layers,
            pre_trained=pre_trained,
            weights_path=weights_path,
            hidden_dim=hidden_dim,
            num_semantic_tokens=num_semantic_tokens,
            num_heads=num_heads,
            num_layers=num_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            patch_sizes=patch_sizes,
            noise_scale=noise_scale,
            scale_projection=scale_projection,
            noise_target=noise_target,
            fusion_weight=fusion_weight,
            sigma=sigma,
            score_top_k=score_top_k,
            use_hpe=use_hpe,
            use_prior=use_prior,
            use_semantic_tokens=use_semantic_tokens,
            use_cscd=use_cscd,
        )

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

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:  # noqa: ANN002, ANN003
        """Dual cosine reconstruction loss (Eq. 7) on cached backbone features."""
        del args, kwargs
        with self.profile("features (cache or backbone)"):
            features = self.cached_features(
                batch.image, getattr(batch, "image_path", None), self.model.extract_features
            )
        with self.profile("network forward + loss"):
            loss = self.model.training_loss(features)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        return {"loss": loss}

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the trainable (non-backbone) parameters, with the chosen learning-rate schedule."""
        return self.adamw_with_schedule()

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation (the pool is built when training starts); gradient clipping if set."""
        return {**super().trainer_arguments, "gradient_clip_val": self.gradient_clip}
