# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of PNPT (Prior Normality Prompt Transformer, Yao et al., IEEE TII 2024).

Data path: frozen backbone -> global coding -> class retrieval in the prompt pool (CS-NPP) -> prior
features ``F_prior`` and the input's own ``F_self`` -> HPE -> M x (SACE -> CSCD), both streams ->
HPE^-1 -> reconstructions ``F_prior*``, ``F_self*`` -> fused anomaly map (Eq. 8) and image score.

Ablation switches (paper Table VI): ``use_hpe=False`` uses only the last backbone level (patch size 1);
``use_prior=False`` is single-stream (no CS-NPP); ``use_semantic_tokens=False`` removes SACE's semantic
tokens (CSCD then conditions both streams on the prior-stream tokens); ``use_cscd=False`` skips CSCD.

Example:
    >>> import torch
    >>> model = PnptModel("tf_efficientnet_lite0", pre_trained=False, hidden_dim=32, num_semantic_tokens=4,
    ...                   num_heads=4, num_layers=1, ffn_dim=64)
    >>> images = torch.rand(2, 3, 64, 64)
    >>> features = model.extract_features(images)
    >>> model.prompt_pool.begin(1, model.key_dim(features), [f.shape[1:] for f in features])
    >>> model.prompt_pool.accumulate(torch.zeros(2, dtype=torch.long), model.global_coding(features), features)
    >>> model.prompt_pool.finish()
    >>> output = model.eval()(images)
    >>> output.anomaly_map.shape, output.pred_score.shape
    (torch.Size([2, 1, 64, 64]), torch.Size([2]))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from anomalib_pnpt.backbones import FrozenFeatureExtractor
from anomalib_pnpt.data.items import PromptedPrediction
from anomalib_pnpt.models.pnpt.anomaly_map import PnptAnomalyMap
from anomalib_pnpt.models.pnpt.components import CscdLayer, HierarchicalPatchEmbedding, SaceLayer
from anomalib_pnpt.models.pnpt.loss import DualCosineLoss
from anomalib_pnpt.prompt_pool import PromptPool, Retrieval, validate_untrained_class_scoring


class PnptModel(nn.Module):
    """PNPT network: frozen backbone, prompt pool, dual-stream reconstruction transformer.

    Args:
        backbone: timm backbone name (paper: ``wide_resnet50_2``).
        layers: Backbone feature indices (paper: the first three stages, ``(1, 2, 3)``).
        pre_trained: Load ImageNet weights for the backbone.
        weights_path: Optional local weights file for the backbone.
        hidden_dim: Token width ``C`` (paper: 760).
        num_semantic_tokens: ``N`` (paper: 40).
        num_heads: Attention heads (paper: 8).
        num_layers: ``M`` SACE/CSCD pairs (paper: 4).
        ffn_dim: FFN hidden width (not given by the paper; default ``4 * C`` rounded).
        dropout: Dropout in attention and FFN.
        patch_sizes: HPE patch size per level (default: coarsest stride / level stride, e.g. 4/2/1).
        noise_scale: HPE feature-jitter strength in training.
        scale_projection: HPE scale merge: ``"per_scale"`` (paper Sec. III-C: each scale to its slice of ``C``)
            or ``"joint"`` (one linear map over all scales' patch vectors).
        noise_target: Where the jitter goes: ``"embedding"`` (paper: on ``E``) or ``"patch"`` (patch vectors).
        fusion_weight: Prior stream's weight in the fused reconstruction (Eq. 8).
        sigma: Gaussian smoothing of the anomaly map.
        score_top_k: Image score as mean of the top-k map pixels (``None``: max).
        use_hpe: Ablation switch, see module docstring.
        use_prior: Ablation switch.
        use_semantic_tokens: Ablation switch.
        use_cscd: Ablation switch.
        untrained_class_scoring: How a class added after training (:meth:`PromptedAnomalyModule.add_class`) is
            scored: ``"prompt"`` by its normality prompt alone (Eq. 8 with ``F_fuse* = F_prior``: the network never
            learnt to reconstruct that product, and the prior needs no training), ``"network"`` like the trained
            classes.
        prior_residual: Both streams reconstruct their correction to the retrieved prior,
            ``F* = F_prior + HPE^-1(...)``, with HPE^-1 started at zero, so that the untrained network scores
            exactly as its prior and training starts from the prior's loss (not in the paper: ``False``, HPE^-1's
            output is ``F*`` itself). Needs ``use_prior``.
    """

    # Many arguments: the network's arguments, each documented once, here.
    def __init__(  # noqa: PLR0913
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[int] = (1, 2, 3),
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
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
        use_hpe: bool = True,
        use_prior: bool = True,
        use_semantic_tokens: bool = True,
        use_cscd: bool = True,
        untrained_class_scoring: str = "prompt",
        prior_residual: bool = False,
    ) -> None:
        super().__init__()
        if prior_residual and not use_prior:
            msg = "prior_residual=True needs use_prior=True: without a prior there is nothing to correct."
            raise ValueError(msg)
        self.prior_residual = prior_residual
        self.untrained_class_scoring = validate_untrained_class_scoring(untrained_class_scoring)
        layers = list(layers) if use_hpe else [list(layers)[-1]]
        self.use_prior = use_prior
        self.use_semantic_tokens = use_semantic_tokens
        self.use_cscd = use_cscd
        self.feature_extractor = FrozenFeatureExtractor(
            backbone, layers, pretrained=pre_trained, weights_path=weights_path
        )
        self.prompt_pool = PromptPool(num_prompts=len(layers))
        self.hpe = HierarchicalPatchEmbedding(
            self.feature_extractor.out_channels,
            self.feature_extractor.reductions,
            hidden_dim,
            patch_sizes=patch_sizes if use_hpe else None,
            noise_scale=noise_scale,
            scale_projection=scale_projection,
            noise_target=noise_target,
        )
        if prior_residual:  # the network starts as its prior: a zero correction
            for layer in self.hpe.inverse_projections:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        ffn_dim = ffn_dim or 4 * hidden_dim
        self.semantic_tokens = nn.Parameter(torch.zeros(1, num_semantic_tokens, hidden_dim))
        nn.init.trunc_normal_(self.semantic_tokens, std=0.02)
        self.sace = nn.ModuleList(SaceLayer(hidden_dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.cscd = nn.ModuleList(CscdLayer(hidden_dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.loss = DualCosineLoss()
        self.anomaly_map_generator = PnptAnomalyMap(fusion_weight=fusion_weight, sigma=sigma, top_k=score_top_k)

    def extract_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen multi-scale features of pre-processed images."""
        return self.feature_extractor(images)

    @staticmethod
    def global_coding(features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Retrieval key: concatenation over scales of the globally average-pooled features ``(B, sum c_i)``."""
        return torch.cat([level.mean(dim=(-2, -1)) for level in features], dim=1)

    @staticmethod
    def key_dim(features: Sequence[torch.Tensor]) -> int:
        """Length of the global coding for these features."""
        return sum(level.shape[1] for level in features)

    def retrieve_prior(self, features: Sequence[torch.Tensor]) -> Retrieval:
        """Retrieve the nearest class and its normality features ``F_prior`` by the input's global coding."""
        self.prompt_pool.check_built()
        return self.prompt_pool.retrieve(self.global_coding(features))

    def reconstruct(
        self,
        features: Sequence[torch.Tensor],
        prior: Sequence[torch.Tensor] | None,
    ) -> tuple[list[torch.Tensor] | None, list[torch.Tensor]]:
        """Run both streams through HPE, the M SACE/CSCD pairs and HPE^-1.

        Args:
            features: The input's features ``F_self``.
            prior: The retrieved ``F_prior`` (``None`` in the single-stream ablation).

        Returns:
            ``(F_prior*, F_self*)`` (the first is ``None`` without a prior stream).
        """
        grid = (features[0].shape[-2] // self.hpe.patch_sizes[0], features[0].shape[-1] // self.hpe.patch_sizes[0])
        own = self.hpe(features)
        prior_tokens = self.hpe(prior) if prior is not None else None
        semantic = self.semantic_tokens.expand(own.shape[0], -1, -1) if self.use_semantic_tokens else None
        for sace, cscd in zip(self.sace, self.cscd, strict=True):
            prior_tokens, own, semantic = sace(prior_tokens, own, semantic)
            if self.use_cscd:
                # Without semantic tokens the prior stream itself is the condition (or the stream itself).
                condition = semantic if semantic is not None else (prior_tokens if prior_tokens is not None else own)
                if prior_tokens is None:
                    own = cscd(own, condition)
                else:  # shared weights: both streams as one batch, as in SACE
                    both = cscd(torch.cat([own, prior_tokens]), torch.cat([condition, condition]))
                    own, prior_tokens = both.unflatten(0, (2, -1))  # unflatten, not chunk: keeps batch dynamic
        prior_reconstruction = self.hpe.inverse(prior_tokens, grid) if prior_tokens is not None else None
        self_reconstruction = self.hpe.inverse(own, grid)
        if self.prior_residual and prior is not None:  # prior_residual needs use_prior: both streams then exist
            prior_reconstruction = [base + change for base, change in zip(prior, prior_reconstruction, strict=True)]
            self_reconstruction = [base + change for base, change in zip(prior, self_reconstruction, strict=True)]
        return prior_reconstruction, self_reconstruction

    def training_loss(
        self,
        features: Sequence[torch.Tensor],
        synthetic_features: Sequence[torch.Tensor] | None = None,
        restoration_weight: float = 0.0,
    ) -> torch.Tensor:
        """Reconstruction loss (Eq. 7) of a batch of training features, plus an optional restoration term.

        Args:
            features: Backbone features of the normal training images (the targets of both terms).
            synthetic_features: Features of synthetic-anomaly copies of the same images, or ``None``.
            restoration_weight: Weight of the restoration term (not in the paper): Eq. 7 with the copies as the
                input (their prior retrieved from them, as at inspection) and the clean features as the target,
                so that the network learns to put back normal features where a defect is, not to copy it.

        Returns:
            ``l_rec`` (+ ``restoration_weight * l_res``).
        """
        loss = self.loss(features, *self.reconstruct(features, self._training_prior(features)))
        if synthetic_features is not None and restoration_weight > 0:
            restored = self.reconstruct(synthetic_features, self._training_prior(synthetic_features))
            loss = loss + restoration_weight * self.loss(features, *restored)
        return loss

    @torch.no_grad()
    def fit_losses(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """How well the network fits these (training) features, against the prior it starts from.

        Both are Eq. 7 without the training jitter: ``network`` with the two streams' reconstructions, ``prior``
        with the retrieved class mean as both (what a network that only copied its prior would score). Training
        has earned the network its place where ``network`` falls below ``prior``.

        Args:
            features: Backbone features of normal training images.

        Returns:
            ``{"network": l_rec, "prior": l_rec of F* = F_prior}``.
        """
        training = self.training
        self.eval()  # no jitter
        try:
            prior = self.retrieve_prior(features).prompts
            network = self.loss(features, *self.reconstruct(features, prior if self.use_prior else None))
        finally:
            self.train(training)
        return {"network": network, "prior": self.loss(features, prior, prior)}

    def _training_prior(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
        return self.retrieve_prior(features).prompts if self.use_prior else None

    def _eq8_map(
        self, features: Sequence[torch.Tensor], prior: Sequence[torch.Tensor], image_size: torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prior_reconstruction, self_reconstruction = self.reconstruct(features, prior if self.use_prior else None)
        return self.anomaly_map_generator(features, prior_reconstruction, self_reconstruction, image_size=image_size)

    def predict(self, images: torch.Tensor, maps: Sequence[torch.Tensor] | None = None) -> PromptedPrediction:
        """Anomaly map and image score, the retrieved class, and whether the image is of a known class.

        Args:
            images: Pre-processed images ``(B, 3, H, W)``.
            maps: Their backbone maps (``feature_extractor(images)``), if already computed.

        Returns:
            ``PromptedPrediction(pred_score, anomaly_map, class_id, class_similarity, unknown)``.
        """
        features = self.extract_features(images) if maps is None else list(maps)
        retrieval = self.retrieve_prior(features)
        class_ids, prior = retrieval.class_ids, retrieval.prompts
        anomaly_map, score = self._eq8_map(features, prior, images.shape[-2:])
        if self.untrained_class_scoring == "prompt" and self.prompt_pool.may_hold_untrained_classes():
            # A class the network never trained on: Eq. 8's distance to the retrieved prior itself.
            prompt_only = self.anomaly_map_generator(features, None, prior, image_size=images.shape[-2:])
            anomaly_map, score = self.prompt_pool.route_untrained_classes(class_ids, (anomaly_map, score), prompt_only)
        return PromptedPrediction(score, anomaly_map, class_ids, retrieval.class_similarity, retrieval.unknown)

    def forward(self, images: torch.Tensor) -> PromptedPrediction | torch.Tensor:
        """Training: the reconstruction loss; eval: :meth:`predict`."""
        if self.training:
            return self.training_loss(self.extract_features(images))
        return self.predict(images)
