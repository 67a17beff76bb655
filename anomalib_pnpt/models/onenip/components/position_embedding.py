# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Learned row/column position embedding of OneNIP's token grid.

Half of the channels come from a learned embedding of the token's row, half from its column (as in DETR
and UniAD); OneNIP adds it to the queries and keys of every attention, not to the values.

Example:
    >>> embedding = LearnedPositionEmbedding(height=4, width=6, dim=8)
    >>> embedding().shape
    torch.Size([24, 8])
"""

from __future__ import annotations

import torch
from torch import nn


class LearnedPositionEmbedding(nn.Module):
    """Learned 2-D position embedding ``(L, dim)`` for a ``height x width`` grid.

    Args:
        height: Grid height.
        width: Grid width.
        dim: Embedding width (even).
    """

    def __init__(self, height: int, width: int, dim: int) -> None:
        super().__init__()
        if dim % 2:
            msg = f"Position embedding width must be even, got {dim}."
            raise ValueError(msg)
        self.height, self.width = height, width
        self.row = nn.Parameter(torch.empty(height, dim // 2))
        self.col = nn.Parameter(torch.empty(width, dim // 2))
        nn.init.uniform_(self.row)
        nn.init.uniform_(self.col)

    def forward(self) -> torch.Tensor:
        """Embedding of every grid position, row-major ``(H * W, dim)``."""
        rows = self.row[:, None, :].expand(self.height, self.width, -1)
        cols = self.col[None, :, :].expand(self.height, self.width, -1)
        return torch.cat([rows, cols], dim=-1).reshape(self.height * self.width, -1)
