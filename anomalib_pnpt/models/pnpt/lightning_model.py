# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT as an anomalib model: one model for many classes, no class label at inspection time.

PNPT (Yao et al., "Prior Normality Prompt Transformer for Multiclass Industrial Image Anomaly Detection",
IEEE TII 2024) reconstructs the features of a frozen CNN with two streams — one from the input, one from
the normality prompt of the input's class retrieved from a class-specific pool — so the network cannot
fall back to copying its input. The pool is built from the training images by :class:`PromptPoolCallback`
(registered automatically) before the first optimisation step.

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

import timm
import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_pnpt.feature_cache import FeatureCache
from anomalib_pnpt.models.pnpt.torch_model import PnptModel
from anomalib_pnpt.prompt_pool import PromptPoolCallback

logger = logging.getLogger(__name__)


class Pnpt(AnomalibModule):
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
        fusion_weight: Prior stream weight in the fused map (Eq. 8).
        sigma: Gaussian smoothing of the anomaly map.
        score_top_k: Image score = mean of the top-k map pixels; ``None`` = max.
        learning_rate: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay.
        cache_features: Reuse training images' backbone features across epochs.
        use_hpe: Ablation: ``False`` = last backbone level only.
        use_prior: Ablation: ``False`` = single stream, no CS-NPP.
        use_semantic_tokens: Ablation: ``False`` = no SACE semantic tokens.
        use_cscd: Ablation: ``False`` = no CSCD.
        pre_processor: anomalib pre-processor, or ``True`` for resize + the backbone's normalisation.
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
    """

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
        fusion_weight: float = 0.5,
        sigma: float = 4.0,
        score_top_k: int | None = None,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-4,
        cache_features: bool = True,
        use_hpe: bool = True,
        use_prior: bool = True,
        use_semantic_tokens: bool = True,
        use_cscd: bool = True,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size=(image_size, image_size), backbone=backbone)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.cache_features = cache_features
        self.backbone_id = f"{backbone}:{list(layers)}:{pre_trained}:{weights_path}:{use_hpe}"
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
            fusion_weight=fusion_weight,
            sigma=sigma,
            score_top_k=score_top_k,
            use_hpe=use_hpe,
            use_prior=use_prior,
            use_semantic_tokens=use_semantic_tokens,
            use_cscd=use_cscd,
        )
        self.feature_cache = FeatureCache(self.backbone_id)
        self.prompt_categories: list[str] = []
        self._retrieval = torch.zeros(2, dtype=torch.long)  # [correct, total] over the current test run

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
        config = timm.get_pretrained_cfg(backbone)
        mean = list(config.mean) if config is not None else [0.485, 0.456, 0.406]
        std = list(config.std) if config is not None else [0.229, 0.224, 0.225]
        transform = Compose([Resize(image_size or (256, 256), antialias=True), Normalize(mean=mean, std=std)])
        return PreProcessor(transform=transform)

    def configure_callbacks(self) -> Sequence[Callback]:
        """Anomalib's component callbacks plus the prompt-pool builder."""
        callbacks = super().configure_callbacks()
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        return [*callbacks, PromptPoolCallback()]

    def _features(self, images: torch.Tensor, paths: Sequence[str] | None) -> list[torch.Tensor]:
        if self.cache_features and paths is not None:
            return self.feature_cache.features(paths, images, self.model.extract_features)
        return self.model.extract_features(images)

    @torch.no_grad()
    def build_prompt_pool(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[str]]],
        num_classes: int | None = None,
    ) -> None:
        """Build the CS-NPP from ``(images, class_ids, paths)`` batches of pre-processed training images.

        Args:
            batches: Pre-processed training batches (the callback supplies them).
            num_classes: Number of classes; ``None`` means 1 (single-class data).
        """
        pool = self.model.prompt_pool
        started = False
        for images, class_ids, paths in batches:
            features = self._features(images, paths)
            if not started:
                shapes = [level.shape[1:] for level in features]
                pool.begin(num_classes or 1, self.model.key_dim(features), shapes)
                started = True
            pool.accumulate(class_ids, self.model.global_coding(features), features)
        if not started:
            msg = "No training batch to build the prompt pool from."
            raise RuntimeError(msg)
        pool.finish()

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:  # noqa: ANN002, ANN003
        """Dual cosine reconstruction loss (Eq. 7) on cached backbone features."""
        del args, kwargs
        features = self._features(batch.image, getattr(batch, "image_path", None))
        loss = self.model.training_loss(features)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        return {"loss": loss}

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:  # noqa: ANN002, ANN003
        """Predict scores and maps (the post-processor calibrates on them)."""
        del args, kwargs
        predictions, _ = self.model.predict(batch.image)
        return batch.update(pred_score=predictions.pred_score, anomaly_map=predictions.anomaly_map)

    def on_test_start(self) -> None:
        """Reset the retrieval-accuracy counters."""
        self._retrieval = torch.zeros(2, dtype=torch.long)

    def test_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:  # noqa: ANN002, ANN003
        """Predict, and count how often the retrieved class is the sample's class."""
        del args, kwargs
        predictions, class_ids = self.model.predict(batch.image)
        truth = getattr(batch, "category_id", None)
        if truth is not None and self.model.prompt_pool.num_classes > 1:
            self._retrieval += torch.tensor([int((class_ids.cpu() == truth.cpu()).sum()), len(truth)])
        return batch.update(pred_score=predictions.pred_score, anomaly_map=predictions.anomaly_map)

    def on_test_epoch_end(self) -> None:
        """Log the class-retrieval accuracy of the test run."""
        correct, total = self._retrieval.tolist()
        if total:
            self.log("retrieval_accuracy", correct / total)
            logger.info("Prompt-pool class retrieval accuracy: %.4f (%d / %d)", correct / total, correct, total)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the trainable (non-backbone) parameters."""
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save the class names of the prompt pool."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["prompt_categories"] = list(self.prompt_categories)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the class names of the prompt pool."""
        super().on_load_checkpoint(checkpoint)
        self.prompt_categories = list(checkpoint.get("prompt_categories", []))

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on normal images only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation: the prompt pool is only built when training starts."""
        return {"num_sanity_val_steps": 0}
