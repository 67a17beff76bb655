# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's shared encoder and bidirectional decoder (Gao, ECCV 2024, Sec. 3.2-3.3, Eq. 3).

All blocks are post-LN (``x = LN(x + sublayer(x))``), add the position embedding to queries and keys only,
and take an optional additive attention mask (the neighbour mask).

- :class:`EncoderLayer`: masked self-attention + FFN. The same encoder encodes the query image and the
  prompt image (batch-concatenated, no mixing between them).
- :class:`BidirectionalDecoderLayer` (Eq. 3): (a) prompt tokens attend to the image tokens; (b) FFN on the
  prompt stream; (c) image tokens attend to the updated prompt tokens. Both attentions are masked.
- After the last decoder layer a final, unmasked prompt-to-image attention produces the prompt stream from
  which the query's features are reconstructed.

The blocks themselves (attention with positions on queries and keys, ReLU FFN, dropout on the residual
branches) are the shared :mod:`anomalib_pnpt.transformer_blocks`.

Example:
    >>> import torch
    >>> layer = BidirectionalDecoderLayer(dim=16, num_heads=4, ffn_dim=32)
    >>> image, prompt, pos = torch.rand(2, 9, 16), torch.rand(2, 9, 16), torch.rand(9, 16)
    >>> image, prompt = layer(image, prompt, pos)
    >>> image.shape, prompt.shape
    (torch.Size([2, 9, 16]), torch.Size([2, 9, 16]))
"""

from __future__ import annotations

import torch
from torch import nn

from anomalib_pnpt.transformer_blocks import ResidualAttention, ResidualFeedForward


class EncoderLayer(nn.Module):
    """Masked self-attention then FFN, both post-LN.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout rate (residual branches and FFN).
        attention_dropout: Dropout on the attention weights.
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.self_attention = ResidualAttention(dim, num_heads, attention_dropout, residual_dropout=dropout)
        self.ffn = ResidualFeedForward(dim, ffn_dim, dropout, activation="relu")

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``tokens (B, L, C)``."""
        return self.ffn(self.self_attention(tokens, tokens, pos, mask))


class BidirectionalDecoderLayer(nn.Module):
    """One layer of OneNIP's bidirectional decoder (Eq. 3).

    Args:
        dim: Token width.
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout rate (residual branches and FFN).
        attention_dropout: Dropout on the attention weights.
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.prompt_to_image = ResidualAttention(dim, num_heads, attention_dropout, residual_dropout=dropout)
        self.prompt_ffn = ResidualFeedForward(dim, ffn_dim, dropout, activation="relu")
        self.image_to_prompt = ResidualAttention(dim, num_heads, attention_dropout, residual_dropout=dropout)

    def forward(
        self,
        image: torch.Tensor,
        prompt: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update both streams; returns ``(image, prompt)``."""
        prompt = self.prompt_ffn(self.prompt_to_image(prompt, image, pos, mask))  # (a) + (b)
        image = self.image_to_prompt(image, prompt, pos, mask)  # (c)
        return image, prompt
