# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Hierarchical patch embedding (HPE) and its inverse.

PNPT embeds H feature maps of different resolutions into ONE token sequence: each scale is cut into
non-overlapping patches whose size grows with the scale's resolution ("multiple-increasing patch sizes",
e.g. 4/2/1 for strides 4/8/16), so every scale gives the same ``L = h x w`` token grid. Sec. III-C projects
each scale to hidden dimensions and concatenates the scales into ``E`` (``L x C``):
``scale_projection="per_scale"`` (the default) gives scale ``i`` its own linear map onto a ``C / H`` slice of
the token, and the inverse maps each slice back to its scale's patch vectors (the symmetric HPE^-1).
``scale_projection="joint"`` is this package's earlier reading: the patch vectors of all scales concatenated
and mapped by ONE linear layer to ``C`` and back. Fixed 2-D sin-cos position embeddings (the first author's
earlier code's choice) are added to the tokens.

Training noise (UniAD's feature jitter, an anti-overfitting device against the identity shortcut): the paper
adds Gaussian noise to the embeddings ``E`` (``noise_target="embedding"``, the default), per token with
standard deviation ``noise_scale * ||e||_2 / C``; ``noise_target="patch"`` adds it to the patch vectors before
the projection instead, where the projection discards most of it. The reconstruction target stays clean.

Example:
    >>> import torch
    >>> hpe = HierarchicalPatchEmbedding(in_channels=[8, 16], reductions=[4, 8], hidden_dim=32)
    >>> hpe.slice_dims
    [16, 16]
    >>> maps = [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
    >>> tokens = hpe(maps)
    >>> tokens.shape
    torch.Size([2, 64, 32])
    >>> [m.shape[1:] for m in hpe.inverse(tokens, grid=(8, 8))]
    [torch.Size([8, 16, 16]), torch.Size([16, 8, 8])]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.feature_jitter import feature_jitter

SCALE_PROJECTIONS = ("per_scale", "joint")
NOISE_TARGETS = ("embedding", "patch")


def sincos_position_embedding(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(h * w, dim)`` (half the channels per axis)."""
    height, width = grid
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    parts = []
    for coords in (ys.flatten(), xs.flatten()):
        angles = coords[:, None] * omega[None]
        parts += [angles.sin(), angles.cos()]
    embedding = torch.cat(parts, dim=1)
    return F.pad(embedding, (0, dim - embedding.shape[1]))


def _rename_single_projection_keys(
    module: nn.Module, state_dict: dict, prefix: str, *args: object, **kwargs: object
) -> None:
    """Load checkpoints written before the per-scale option (``projection.*`` -> ``projections.0.*``).

    Those checkpoints hold the joint projection as single ``projection`` / ``inverse_projection`` layers; with
    ``scale_projection="joint"`` they are the first (only) entries of today's module lists.
    """
    del module, args, kwargs
    for old, new in (("projection.", "projections.0."), ("inverse_projection.", "inverse_projections.0.")):
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


class HierarchicalPatchEmbedding(nn.Module):
    """Multi-scale feature maps -> one token grid (HPE) and back (HPE^-1).

    Args:
        in_channels: Channels of each scale, finest first.
        reductions: Stride of each scale (e.g. 4, 8, 16).
        hidden_dim: Token width ``C``.
        patch_sizes: Patch size per scale; default ``reduction_max / reduction_i`` so all scales reach the
            coarsest scale's grid.
        noise_scale: Feature-jitter strength during training (0 disables it).
        scale_projection: ``"per_scale"`` (paper, Sec. III-C) or ``"joint"`` (one map over all scales).
        noise_target: ``"embedding"`` (paper: noise on ``E``) or ``"patch"`` (on the patch vectors).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reductions: Sequence[int],
        hidden_dim: int,
        patch_sizes: Sequence[int] | None = None,
        noise_scale: float = 20.0,
        scale_projection: str = "per_scale",
        noise_target: str = "embedding",
    ) -> None:
        super().__init__()
        if scale_projection not in SCALE_PROJECTIONS:
            msg = f"scale_projection must be one of {SCALE_PROJECTIONS}, got {scale_projection!r}."
            raise ValueError(msg)
        if noise_target not in NOISE_TARGETS:
            msg = f"noise_target must be one of {NOISE_TARGETS}, got {noise_target!r}."
            raise ValueError(msg)
        if patch_sizes is None:
            patch_sizes = [max(reductions) // reduction for reduction in reductions]
        if any(p * r != patch_sizes[0] * reductions[0] for p, r in zip(patch_sizes, reductions, strict=True)):
            msg = f"patch_sizes {list(patch_sizes)} do not bring strides {list(reductions)} to one token grid."
            raise ValueError(msg)
        self.in_channels = list(in_channels)
        self.patch_sizes = [int(p) for p in patch_sizes]
        self.noise_scale = noise_scale
        self.scale_projection = scale_projection
        self.noise_target = noise_target
        self.patch_dims = [c * p * p for c, p in zip(self.in_channels, self.patch_sizes, strict=True)]
        # The patch-vector chunks each projection reads and the token slices each inverse reads.
        if scale_projection == "joint":
            self.input_dims = [sum(self.patch_dims)]
            self.slice_dims = [hidden_dim]
        else:
            # Equal slices of C, the remainder to the finest scales (the paper does not say how C is split).
            count = len(self.patch_dims)
            self.input_dims = list(self.patch_dims)
            self.slice_dims = [hidden_dim // count + (i < hidden_dim % count) for i in range(count)]
        pairs = list(zip(self.input_dims, self.slice_dims, strict=True))
        self.projections = nn.ModuleList(nn.Linear(d, c) for d, c in pairs)
        self.inverse_projections = nn.ModuleList(nn.Linear(c, d) for d, c in pairs)
        self.register_load_state_dict_pre_hook(_rename_single_projection_keys)

    def patch_vectors(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenated patch vectors ``(B, L, sum_i c_i * p_i^2)`` of all scales."""
        vectors = [F.pixel_unshuffle(m, p) if p > 1 else m for m, p in zip(maps, self.patch_sizes, strict=True)]
        return torch.cat(vectors, dim=1).flatten(2).transpose(1, 2)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Embed the maps as tokens ``(B, L, C)`` (with jitter in training mode, position added)."""
        vectors = self.patch_vectors(maps)
        if self.training and self.noise_target == "patch":
            vectors = feature_jitter(vectors, self.noise_scale)
        inputs = torch.split(vectors, self.input_dims, dim=-1)
        tokens = torch.cat([project(x) for project, x in zip(self.projections, inputs, strict=True)], dim=-1)
        if self.training and self.noise_target == "embedding":
            tokens = feature_jitter(tokens, self.noise_scale)
        grid = maps[0].shape[-2] // self.patch_sizes[0], maps[0].shape[-1] // self.patch_sizes[0]
        return tokens + sincos_position_embedding(grid, tokens.shape[-1]).to(tokens)

    def inverse(self, tokens: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        """Map tokens ``(B, L, C)`` back to the multi-scale maps (HPE^-1)."""
        slices = torch.split(tokens, self.slice_dims, dim=-1)
        vectors = torch.cat([invert(x) for invert, x in zip(self.inverse_projections, slices, strict=True)], dim=-1)
        vectors = vectors.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        maps = []
        for chunk, patch in zip(torch.split(vectors, self.patch_dims, dim=1), self.patch_sizes, strict=True):
            maps.append(F.pixel_shuffle(chunk, patch) if patch > 1 else chunk)
        return maps
