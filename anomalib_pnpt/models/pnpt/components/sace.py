# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""SACE: per-stream context encoding with shared semantic tokens and their second-order alignment.

One SACE layer (PNPT, Eq. 3-4):

1. ``N`` semantic tokens ``E_S`` are appended to each stream's patch tokens and each sequence goes through
   a post-LN transformer encoder block (self-attention + FFN, Eq. 3). The block's weights are shared by the
   prior and the self stream (the paper runs them "separately"; sharing keeps both streams in one feature
   space and halves the parameters; separate weights fitted better and detected no better,
   ``benchmarks/FINDINGS.md``).
2. The outputs are split into patch tokens ``R_prior``, ``R_self`` (queries of the CSCD layer) and the
   two semantic outputs ``R_S(p)``, ``R_S(s)``.
3. Second-order cross-attention aligns the semantic tokens of the two streams (Eq. 4)::

       R'_S(p) = LN(CAM(q=R_S(p), kv=R_S(s)) + R_S(p))
       Z       = LN(CAM(q=R_S(s), kv=R'_S(p)) + R_S(s))
       E_S(l)  = LN(FFN(Z) + Z)

   ``E_S(l)`` conditions the CSCD layer and is the next layer's semantic-token input.

Ablations: without semantic tokens the streams are only self-encoded (no ``E_S``); with a single stream
(no prior) the alignment has no partner, and ``E_S(l)`` is the self stream's semantic output.

Example:
    >>> import torch
    >>> layer = SaceLayer(dim=32, num_heads=4, ffn_dim=64)
    >>> prior, own, semantic = torch.rand(2, 16, 32), torch.rand(2, 16, 32), torch.rand(2, 5, 32)
    >>> r_prior, r_self, fused = layer(prior, own, semantic)
    >>> r_prior.shape, fused.shape
    (torch.Size([2, 16, 32]), torch.Size([2, 5, 32]))
"""

from __future__ import annotations

import torch
from torch import nn

from anomalib_pnpt.transformer_blocks import ResidualAttention, ResidualFeedForward

# Checkpoints written before the blocks were shared with OneNIP (anomalib_pnpt/transformer_blocks.py).


class SaceLayer(nn.Module):
    """One SACE layer of PNPT (Eq. 3-4).

    Args:
        dim: Token width ``C``.
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout in attention and FFN.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        # Eq. 3: the post-LN encoder block (self-attention + FFN), shared by both streams.
        self.self_attention = ResidualAttention(dim, num_heads, dropout)
        self.ffn = ResidualFeedForward(dim, ffn_dim, dropout, activation="gelu")
        # Eq. 4: the second-order cross-attention of the semantic tokens, then their FFN.
        self.align_prior = ResidualAttention(dim, num_heads, dropout)
        self.align_self = ResidualAttention(dim, num_heads, dropout)
        self.semantic_ffn = ResidualFeedForward(dim, ffn_dim, dropout, activation="gelu")

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """The encoder block of Eq. 3: ``X = LN(SA(X) + X); X = LN(FFN(X) + X)``."""
        return self.ffn(self.self_attention(tokens, tokens))

    def forward(
        self,
        prior: torch.Tensor | None,
        own: torch.Tensor,
        semantic: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Encode both streams and fuse their semantic tokens.

        Args:
            prior: Prior-stream patch tokens ``(B, L, C)`` or ``None`` (single-stream ablation).
            own: Self-stream patch tokens ``(B, L, C)``.
            semantic: Semantic tokens ``(B, N, C)`` or ``None`` (no-semantic-token ablation).

        Returns:
            ``(R_prior, R_self, E_S(l))``.
        """
        if semantic is None:
            return (self.encode(prior) if prior is not None else None), self.encode(own), None
        count = semantic.shape[1]
        if prior is None:
            encoded_self = self.encode(torch.cat([own, semantic], dim=1))
            return None, encoded_self[:, :-count], encoded_self[:, -count:]
        # The encoder is shared, so both streams go through it as one batch: one matrix product per weight
        # instead of two small ones (the same numbers; OpenVINO FP32 on 2 cores, batch 1: 30.7 -> 28.9 ms).
        encoded_self, encoded_prior = self.encode(
            torch.cat([torch.cat([own, semantic], dim=1), torch.cat([prior, semantic], dim=1)])
        ).unflatten(0, (2, -1))  # unflatten, not chunk: chunk pins the batch size in torch.export
        r_self, semantic_self = encoded_self[:, :-count], encoded_self[:, -count:]
        r_prior, semantic_prior = encoded_prior[:, :-count], encoded_prior[:, -count:]
        aligned_prior = self.align_prior(semantic_prior, semantic_self)  # R'_S(p), Eq. 4 first line
        fused = self.align_self(semantic_self, aligned_prior)  # Z, Eq. 4 second line
        fused = self.semantic_ffn(fused)  # E_S(l) = LN(FFN(Z) + Z), Eq. 4 third line
        return r_prior, r_self, fused
