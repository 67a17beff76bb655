# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The post-layer-norm transformer blocks both models are built from, parameterised as their papers need.

Both papers use the original (post-LN) transformer layer: ``x = LN(x + Attention(x, memory))`` and
``x = LN(x + FFN(x))``. They differ only in details, which are arguments here rather than two copies:

* positions: OneNIP adds a (learned) position embedding to queries and keys of every attention (DETR-style,
  ``pos``); PNPT gives none (``pos=None``);
* masks: OneNIP's encoder and decoder attend through UniAD's neighbour mask (``mask``, additive);
* activation: PNPT's FFN uses GELU, OneNIP's ReLU (its official recipe);
* dropout: inside the attention weights and, for OneNIP, also on the residual branches (``residual_dropout``).

The pre-LN form fits PNPT's training images better and detects worse (``benchmarks/FINDINGS.md``): post-LN stays.

PNPT's SACE and CSCD layers and OneNIP's encoder and bidirectional decoder compose these two blocks.

Example:
    >>> import torch
    >>> attention = ResidualAttention(dim=16, num_heads=4)
    >>> ffn = ResidualFeedForward(dim=16, ffn_dim=32, activation="relu")
    >>> tokens, memory = torch.rand(2, 9, 16), torch.rand(2, 5, 16)
    >>> ffn(attention(tokens, memory)).shape
    torch.Size([2, 9, 16])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


class ResidualAttention(nn.Module):
    """``LN(q + Dropout(MHA(q + pos, m + pos, m)))``: attention from ``q`` to ``m`` with a post-LN residual.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        dropout: Dropout on the attention weights.
        residual_dropout: Dropout on the attention's output before the residual sum (OneNIP: ``dropout``).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, residual_dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(residual_dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``query (B, L, C)`` to ``memory (B, M, C)``.

        Args:
            query: Query tokens.
            memory: Key and value tokens.
            pos: ``(L, C)`` position embedding added to queries and keys (needs ``M == L``), or ``None``.
            mask: ``(L, M)`` additive attention mask, or ``None``.

        Returns:
            The updated query tokens.
        """
        query_in, key_in = (query, memory) if pos is None else (query + pos, memory + pos)
        attended = self.attention(query_in, key_in, memory, attn_mask=mask, need_weights=False)[0]
        return self.norm(query + self.dropout(attended))


class ResidualFeedForward(nn.Module):
    """``LN(x + Dropout(W2 Dropout(act(W1 x))))``.

    Args:
        dim: Token width.
        ffn_dim: Hidden width.
        dropout: Dropout rate (after the activation and after ``W2``).
        activation: ``"gelu"`` (PNPT) or ``"relu"`` (OneNIP).
    """

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            msg = f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}."
            raise ValueError(msg)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, dim),
            nn.Dropout(dropout),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Apply the residual FFN to ``tokens (B, L, C)``."""
        return self.norm(tokens + self.ffn(tokens))
