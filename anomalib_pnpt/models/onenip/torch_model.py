# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of OneNIP (One Normal Image Prompt, Gao, ECCV 2024).

Data path: frozen backbone stages (resized to stride 16, concatenated: ``F``) -> pooled key -> retrieval
of the most similar prompt image in the pool -> the prompt's features ``P`` -> shared encoder for ``F`` and
``P`` -> bidirectional decoder -> final prompt-to-image attention -> reconstruction ``F_hat`` read from the
PROMPT stream -> ``S_rec = ||F - F_hat||`` (+ refiner map on ``|F - F_hat|``) -> anomaly map and score.

Prompt modes (ablation of the paper's Table 4a): ``"dynamic"`` (default) trains with a random normal
image of the sample's class as prompt; ``"static"`` always uses the pool's prompt of the class (training
too); ``"none"`` replaces the prompt by learned tokens shared by all classes (UniAD-like, no image prompt).
At inference the prompt is always retrieved from the pool by cosine similarity of pooled features — never
from a label.

The pool holds ``prompts_per_class`` images per class (default 1, as the paper): the training images
whose pooled feature is closest to their class's mean (a typical, not a random, image), each a separate
pool entry. Training additionally keeps a bank of up to ``training_prompts_per_class`` images per
class in memory (not in checkpoints) to draw the random same-class prompts from.

Example:
    >>> import torch
    >>> model = OneNipModel("tf_efficientnet_lite0", pre_trained=False, image_size=64, hidden_dim=32,
    ...                     num_heads=4, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=64)
    >>> images = torch.rand(3, 3, 64, 64)
    >>> features = model.extract_features(images)
    >>> features.shape
    torch.Size([3, 192, 4, 4])
    >>> model.set_prompts(torch.zeros(1, dtype=torch.long), features[:1], num_classes=1)
    >>> output = model.eval()(images)
    >>> output.anomaly_map.shape, output.pred_score.shape
    (torch.Size([3, 1, 64, 64]), torch.Size([3]))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.backbones import FrozenFeatureExtractor, joined_maps
from anomalib_pnpt.data.items import PromptedPrediction
from anomalib_pnpt.feature_jitter import feature_jitter
from anomalib_pnpt.models.onenip.anomaly_map import OneNipAnomalyMap
from anomalib_pnpt.models.onenip.components import (
    BidirectionalDecoderLayer,
    EncoderLayer,
    LearnedPositionEmbedding,
    NeighborMask,
)
from anomalib_pnpt.models.onenip.loss import OneNipLoss
from anomalib_pnpt.models.onenip.refiner import Refiner
from anomalib_pnpt.nearest_patch import nearest_patch_map
from anomalib_pnpt.prompt_pool import PromptPool, Retrieval, validate_untrained_class_scoring
from anomalib_pnpt.transformer_blocks import ResidualAttention

PROMPT_MODES = ("dynamic", "static", "none")
UNTRAINED_CLASS_SCORINGS = ("prompt", "network")
"""OneNIP's ways to score a class added after training: its prompt images, or the network."""


class OneNipModel(nn.Module):
    """OneNIP network: frozen backbone, prompt pool, shared encoder, bidirectional decoder, refiner.

    Args:
        backbone: timm backbone (paper: ``efficientnet_b4``; offline: ``tf_efficientnet_lite2``).
        layers: Feature indices whose maps are resized to stride 16 and concatenated (paper: stages 1-4,
            timm indices ``(0, 1, 2, 3)``: 24 + 32 + 56 + 160 = 272 channels for EfficientNet-B4).
        pre_trained: Load ImageNet weights.
        weights_path: Local backbone weights for hub backbones on an offline machine.
        image_size: Input side (paper: 224); fixes the token grid of the learned position embedding.
        hidden_dim: Token width (paper: 256).
        num_heads: Attention heads (paper: 8).
        num_encoder_layers: Encoder depth (paper: 4).
        num_decoder_layers: Decoder depth (paper: 4).
        ffn_dim: FFN width (paper: 1024).
        dropout: Dropout on the residual branches and in the FFNs (paper: 0.1).
        attention_dropout: Dropout on the attention weights (paper: 0.1, ``None``: ``dropout``). Any value above 0
            keeps PyTorch's CPU attention off its fused kernel: 0 trains the ``cpu`` preset ~1.5x faster.
        neighbor_size: Neighbour-mask window ``k`` (default: feature size // 2); 0 disables the mask.
        noise_scale: Feature-jitter strength in training (paper: 20).
        prompt_mode: ``"dynamic"``, ``"static"`` or ``"none"`` (see module docstring).
        prompts_per_class: Prompt images per class in the inference pool (paper: 1).
        training_prompts_per_class: Images per class kept for random training prompts.
        use_restoration: Train the restoration stream on synthetic anomalies.
        use_refiner: Add the refiner and its map (requires the restoration stream).
        refiner_channels: Refiner width (paper: 128).
        alpha: Refiner weight in the map (paper: 0.5).
        score_pool: Average-pool side before the image-score maximum (paper: 16).
        dice_weight: ``lambda`` of the Dice loss (paper: 0.5).
        dice_per_image: Dice per image and averaged (the official code) instead of over the batch's pixels.
        untrained_class_scoring: How a class added after training (:meth:`PromptedAnomalyModule.add_class`) is
            scored, the network never having learnt that product: ``"prompt"`` by the nearest patches of its
            ``prompts_per_class`` prompt images (:meth:`prompt_patch_reconstruction`), ``"network"`` like the trained
            classes.
    """

    # Many arguments: the network's arguments, each documented once, here.
    def __init__(  # noqa: PLR0913
        self,
        backbone: str = "efficientnet_b4",
        layers: Sequence[int] = (0, 1, 2, 3),
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
        image_size: int = 224,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
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
    ) -> None:
        super().__init__()
        self.untrained_class_scoring = validate_untrained_class_scoring(
            untrained_class_scoring, UNTRAINED_CLASS_SCORINGS
        )
        if prompt_mode not in PROMPT_MODES:
            msg = f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}."
            raise ValueError(msg)
        if use_refiner and not use_restoration:
            msg = "The refiner learns from synthetic anomalies: use_refiner=True needs use_restoration=True."
            raise ValueError(msg)
        self.feature_extractor = FrozenFeatureExtractor(
            backbone, layers, pretrained=pre_trained, weights_path=weights_path
        )
        self.stride = max(16, *self.feature_extractor.reductions)
        if image_size % self.stride:
            msg = f"image_size {image_size} must be a multiple of the feature stride {self.stride}."
            raise ValueError(msg)
        self.grid = (image_size // self.stride, image_size // self.stride)
        self.feature_dim = sum(self.feature_extractor.out_channels)
        self.prompt_mode = prompt_mode
        self.prompts_per_class = prompts_per_class
        self.training_prompts_per_class = training_prompts_per_class
        self.use_restoration = use_restoration
        self.noise_scale = noise_scale

        self.prompt_pool = PromptPool(num_prompts=1, entries_per_class=prompts_per_class)
        # Random-prompt bank for training only: rebuilt when training starts, never saved.
        self.register_buffer("training_prompts", torch.zeros(0), persistent=False)
        self.register_buffer("training_prompt_counts", torch.zeros(0, dtype=torch.long), persistent=False)

        self.input_projection = nn.Linear(self.feature_dim, hidden_dim)
        self.output_projection = nn.Linear(hidden_dim, self.feature_dim)
        self.position = LearnedPositionEmbedding(*self.grid, hidden_dim)
        self.neighbor_mask = NeighborMask(*self.grid, size=neighbor_size) if neighbor_size != 0 else None
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.encoder = nn.ModuleList(
            EncoderLayer(hidden_dim, num_heads, ffn_dim, dropout, attention_dropout) for _ in range(num_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            BidirectionalDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, attention_dropout)
            for _ in range(num_decoder_layers)
        )
        self.final_attention = ResidualAttention(hidden_dim, num_heads, attention_dropout, residual_dropout=dropout)
        if prompt_mode == "none":
            self.learned_prompt = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], hidden_dim))
            nn.init.trunc_normal_(self.learned_prompt, std=0.02)
        self.refiner = Refiner(self.feature_dim, refiner_channels) if use_refiner else None
        self.loss = OneNipLoss(dice_weight=dice_weight, dice_per_image=dice_per_image)
        self.anomaly_map_generator = OneNipAnomalyMap(alpha=alpha, score_pool=score_pool)

    # ------------------------------------------------------------------ features and keys
    def extract_features(self, images: torch.Tensor, maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Backbone maps resized to stride 16 (bilinear, corners aligned) and concatenated ``(B, C, h, w)``.

        Args:
            images: Pre-processed images ``(B, 3, H, W)``.
            maps: Their backbone maps, if already computed.
        """
        maps = self.feature_extractor(images) if maps is None else maps
        return joined_maps(maps, (images.shape[-2] // self.stride, images.shape[-1] // self.stride))

    @staticmethod
    def global_key(features: torch.Tensor) -> torch.Tensor:
        """Retrieval key: the globally average-pooled feature ``(B, C)``."""
        return features.mean(dim=(-2, -1))

    # ------------------------------------------------------------------ prompts
    @torch.no_grad()
    def set_prompts(
        self,
        class_ids: torch.Tensor,
        features: torch.Tensor,
        num_classes: int,
        training_features: torch.Tensor | None = None,
        training_class_ids: torch.Tensor | None = None,
        image_keys: torch.Tensor | None = None,
        image_classes: torch.Tensor | None = None,
    ) -> None:
        """Fill the inference pool (and optionally the training bank) with chosen prompt images.

        Args:
            class_ids: ``(P,)`` class of every prompt image; each class needs ``prompts_per_class`` images.
            features: ``(P, C, h, w)`` their features.
            num_classes: Number of classes.
            training_features: ``(T, C, h, w)`` features of the training-prompt bank (default: the prompts).
            training_class_ids: ``(T,)`` their classes.
            image_keys: ``(N, D)`` keys of every training image (the unknown-class rule's; default: the prompts').
            image_classes: ``(N,)`` their classes.
        """
        if int(class_ids.max()) + 1 != num_classes:
            msg = f"Prompt images of {int(class_ids.max()) + 1} classes given for {num_classes} classes."
            raise ValueError(msg)
        self.prompt_pool.set_entries(class_ids, self.global_key(features), [features], image_keys, image_classes)
        if training_features is None or training_class_ids is None:
            training_features, training_class_ids = features, class_ids
        self.set_training_prompts(training_class_ids, training_features, num_classes)

    @torch.no_grad()
    def set_training_prompts(self, class_ids: torch.Tensor, features: torch.Tensor, num_classes: int) -> None:
        """Keep ``features`` (grouped by class) as the bank that random training prompts are drawn from."""
        counts = torch.bincount(class_ids.cpu(), minlength=num_classes)
        bank = features.new_zeros(num_classes, int(counts.max()), *features.shape[1:])
        for class_id in range(num_classes):
            members = features[class_ids == class_id]
            bank[class_id, : len(members)] = members
        self.training_prompts = bank
        self.training_prompt_counts = counts.to(features.device)

    def retrieve_prompts(self, features: torch.Tensor) -> Retrieval:
        """The most similar pool prompt (cosine of keys): its class and features, and every class's similarity."""
        self.prompt_pool.check_built()
        return self.prompt_pool.retrieve(self.global_key(features))

    def training_prompt_features(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Prompts for training samples of classes ``class_ids`` according to ``prompt_mode``."""
        if self.prompt_mode == "static":
            first_entries = class_ids * self.prompt_pool.entries_per_class  # entries are grouped by class
            return self.prompt_pool.prompts[0][first_entries]
        if self.training_prompts.numel() == 0:
            msg = "The training-prompt bank is empty: build the prompt pool (the model does when training starts)."
            raise RuntimeError(msg)
        counts = self.training_prompt_counts[class_ids]
        picks = (torch.rand(len(class_ids), device=counts.device) * counts).long().clamp(max=counts - 1)
        return self.training_prompts[class_ids, picks]

    # ------------------------------------------------------------------ network
    def _tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, C, h, w)`` -> projected tokens ``(B, L, D)`` (jittered in training)."""
        vectors = features.flatten(2).transpose(1, 2)
        if self.training:
            vectors = feature_jitter(vectors, self.noise_scale)
        return self.input_projection(vectors)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Shared encoder: tokens of a feature map, with the neighbour mask."""
        tokens, pos = self._tokens(features), self.position()
        mask = self.neighbor_mask() if self.neighbor_mask is not None else None
        for layer in self.encoder:
            tokens = layer(tokens, pos, mask)
        return tokens

    def reconstruct(self, features: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
        """Reconstruct ``features`` guided by ``prompts`` (features of prompt images, or ``None`` = learned).

        ``features`` may hold several images per prompt (``n * B`` rows for ``B`` prompts, e.g. the clean
        and synthetic copy of each training image): the prompts are encoded once and repeated.
        """
        batch = features.shape[0]
        if prompts is None:
            image = self.encode(features)
            prompt = self.learned_prompt.expand(batch, -1, -1)
        else:  # one encoder pass for both: batch-concatenated, never mixed
            encoded = self.encode(torch.cat([features, prompts]))
            image, prompt = encoded[:batch], encoded[batch:]
            prompt = prompt.repeat(batch // prompts.shape[0], 1, 1)
        pos = self.position()
        mask = self.neighbor_mask() if self.neighbor_mask is not None else None
        for layer in self.decoder:
            image, prompt = layer(image, prompt, pos, mask)
        prompt = self.final_attention(prompt, image, pos)  # unmasked
        reconstruction = self.output_projection(prompt)
        return reconstruction.transpose(1, 2).reshape(features.shape)

    def class_prompt_patches(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Every location of every prompt image of each retrieved class, ``(B, k * h * w, C)``."""
        prompts = self.prompt_pool.prompts[0]
        per_class = prompts.unflatten(0, (-1, self.prompt_pool.entries_per_class))[class_ids]  # (B, k, C, h, w)
        return per_class.transpose(1, 2).flatten(2).transpose(1, 2)

    @staticmethod
    def prompt_patch_reconstruction(features: torch.Tensor, prompt_patches: torch.Tensor) -> torch.Tensor:
        """Each location of ``features`` replaced by its nearest (L2) patch of the class's prompt images.

        A reconstruction from normal images of the class without any trained part: for a class the network never
        trained on (:func:`~anomalib_pnpt.nearest_patch.nearest_patch_map`, exportable).

        Args:
            features: ``(B, C, h, w)`` query features.
            prompt_patches: ``(B, N, C)`` the retrieved class's prompt patches (:meth:`class_prompt_patches`).

        Returns:
            ``(B, C, h, w)``.
        """
        return nearest_patch_map(features, prompt_patches)

    def refine(self, features: torch.Tensor, reconstruction: torch.Tensor, image_size: torch.Size) -> torch.Tensor:
        """Refiner map ``(B, 1, H, W)`` from the residual ``|F - F_hat|``."""
        return self.refiner((features - reconstruction).abs(), image_size)

    # ------------------------------------------------------------------ training and inference
    def training_loss(
        self,
        features: torch.Tensor,
        class_ids: torch.Tensor,
        image_size: torch.Size,
        synthetic_features: torch.Tensor | None = None,
        synthetic_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """OneNIP's loss (Eq. 7) for clean query features and, optionally, their synthetic-anomaly copies."""
        prompts = None if self.prompt_mode == "none" else self.training_prompt_features(class_ids)
        batch = features.shape[0]
        if synthetic_features is not None:
            # Query and synthetic copy share the prompt; both are reconstructed in one pass.
            both = self.reconstruct(torch.cat([features, synthetic_features]), prompts)
            reconstruction, restoration = both[:batch], both[batch:]
        else:
            reconstruction, restoration = self.reconstruct(features, prompts), None
        refined = masks = None
        if self.refiner is not None and synthetic_features is not None and synthetic_masks is not None:
            refined = self.refine(torch.cat([features, synthetic_features]), both, image_size)
            masks = torch.cat([torch.zeros_like(synthetic_masks), synthetic_masks])
        return self.loss(features, reconstruction, restoration, refined, masks)

    @torch.no_grad()
    def fit_losses(self, features: torch.Tensor, class_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """How well the network fits these (training) features, against the prompt it reconstructs from.

        Both are ``MSE_rec`` without the training jitter: ``network`` of the reconstruction from a training prompt of
        the image's class, ``prompt`` of that prompt's features taken as the reconstruction.

        Args:
            features: Backbone features of normal training images.
            class_ids: Their classes.

        Returns:
            ``{"network": MSE_rec, "prompt": MSE(features, prompt)}`` (``prompt`` absent without prompts).
        """
        prompts = None if self.prompt_mode == "none" else self.training_prompt_features(class_ids)
        training = self.training
        self.eval()  # no jitter, no dropout
        try:
            losses = {"network": F.mse_loss(self.reconstruct(features, prompts), features)}
        finally:
            self.train(training)
        if prompts is not None:
            losses["prompt"] = F.mse_loss(prompts, features)
        return losses

    def reconstruction_error(self, images: torch.Tensor) -> torch.Tensor:
        """``S_rec`` of pre-processed images (used to calibrate the refiner scale)."""
        features = self.extract_features(images)
        reconstruction = self.reconstruct(features, self.inference_prompts(features)[1])
        return self.anomaly_map_generator.reconstruction_error(features, reconstruction, images.shape[-2:])

    def inference_prompts(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Retrieved class, prompt (``None`` in ``"none"`` mode, class still retrieved), similarity and unknown flag."""
        retrieval = self.retrieve_prompts(features)
        prompt = None if self.prompt_mode == "none" else retrieval.prompts[0]
        return retrieval.class_ids, prompt, retrieval.class_similarity, retrieval.unknown

    def predict(self, images: torch.Tensor, maps: Sequence[torch.Tensor] | None = None) -> PromptedPrediction:
        """Anomaly map and image score, the retrieved class, and whether the image is of a known class.

        Args:
            images: Pre-processed images ``(B, 3, H, W)``.
            maps: Their backbone maps (``feature_extractor(images)``), if already computed.

        Returns:
            ``PromptedPrediction(pred_score, anomaly_map, class_id, class_similarity, unknown)``.
        """
        features = self.extract_features(images, maps)
        class_ids, prompts, similarity, unknown = self.inference_prompts(features)
        reconstruction = self.reconstruct(features, prompts)
        refined = self.refine(features, reconstruction, images.shape[-2:]) if self.refiner is not None else None
        anomaly_map, score = self.anomaly_map_generator(features, reconstruction, refined, images.shape[-2:])
        route = (
            self.untrained_class_scoring == "prompt"
            and prompts is not None  # "none" mode has no prompts
            and self.prompt_pool.may_hold_untrained_classes()
        )
        if route:
            # A class the network never trained on: the distance to the nearest patches of its prompt images.
            nearest = self.prompt_patch_reconstruction(features, self.class_prompt_patches(class_ids))
            prompt_only = self.anomaly_map_generator(features, nearest, None, images.shape[-2:])
            anomaly_map, score = self.prompt_pool.route_untrained_classes(class_ids, (anomaly_map, score), prompt_only)
        return PromptedPrediction(score, anomaly_map, class_ids, similarity, unknown)

    def forward(self, images: torch.Tensor) -> PromptedPrediction:
        """Inference: :meth:`predict` (training goes through ``training_loss``)."""
        return self.predict(images)
