# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""CSCD: conditional decoding of each stream's patch tokens on the fused semantic tokens (PNPT, Eq. 5).

``Z_X = LN(CAM(q=R_X, kv=E_S) + R_X);  E_X = LN(FFN(Z_X) + Z_X)`` for ``X`` in {prior, self}; the weights
are shared by the two streams, as in SACE.

Example:
    >>> import torch
    >>> layer = CscdLayer(dim=32, num_heads=4, ffn_dim=64)
    >>> layer(torch.rand(2, 16, 32), torch.rand(2, 5, 32)).shape
    torch.Size([2, 16, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from anomalib_pnpt.transformer_blocks import ResidualAttention, ResidualFeedForward

# Checkpoints written before the blocks were shared with OneNIP (anomalib_pnpt/transformer_blocks.py).


class CscdLayer(nn.Module):
    """One CSCD layer: cross-attention from the patch tokens to the condition, then the FFN, both post-LN.

    Args:
        dim: Token width ``C``.
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout in attention and FFN.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.condition_attention = ResidualAttention(dim, num_heads, dropout)
        self.ffn = ResidualFeedForward(dim, ffn_dim, dropout, activation="gelu")

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Decode ``tokens (B, L, C)`` conditioned on ``condition (B, N, C)`` (Eq. 5)."""
        return self.ffn(self.condition_attention(tokens, condition))
