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

from anomalib_pnpt.models.pnpt.components.sace import EncoderBlock


class CscdLayer(EncoderBlock):
    """One CSCD layer: the post-LN encoder block of SACE with the attention pointed at the condition.

    Args:
        dim: Token width ``C``.
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout in attention and FFN.
    """

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Decode ``tokens (B, L, C)`` conditioned on ``condition (B, N, C)``."""
        return super().forward(tokens, memory=condition)
