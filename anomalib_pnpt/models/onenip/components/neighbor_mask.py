# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Neighbour mask: forbid every token to attend to its own k x k neighbourhood (UniAD, used by OneNIP).

A reconstruction transformer that may look at the very location it reconstructs can copy it, anomaly
included. The neighbour mask removes that path: token ``(r, c)`` may not attend to any token of the
``k x k`` window around it (itself included), so it must be reconstructed from further-away normal
context. OneNIP uses ``k = feature_size // 2`` (7 on the 14 x 14 grid of a 224 px input).

The window covers rows ``r - (k - 1) // 2 .. r - (k - 1) // 2 + k - 1`` (centred for odd ``k``; one more
row/column after the centre than before it for even ``k``), clipped at the border.

Example:
    >>> mask = neighbor_mask(4, 4, size=3)
    >>> mask.shape
    torch.Size([16, 16])
    >>> int(mask[5].sum())  # an interior token cannot see its 3 x 3 window
    9
"""

from __future__ import annotations

import torch
from torch import nn


def neighbor_mask(height: int, width: int, size: int) -> torch.Tensor:
    """Boolean attention mask ``(L, L)``, ``L = height * width``; ``True`` = may NOT attend.

    Args:
        height: Token grid height.
        width: Token grid width.
        size: Window side ``k``.

    Returns:
        The mask in PyTorch's ``attn_mask`` convention (``True`` entries are excluded).
    """
    if size < 1 or size >= max(height, width) * 2:
        msg = f"Neighbour window {size} does not fit a {height} x {width} token grid."
        raise ValueError(msg)
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    before = (size - 1) // 2
    after = size - 1 - before
    row_offset = rows[None, :] - rows[:, None]  # key row - query row
    col_offset = cols[None, :] - cols[:, None]
    return (row_offset >= -before) & (row_offset <= after) & (col_offset >= -before) & (col_offset <= after)


class NeighborMask(nn.Module):
    """The neighbour mask of a fixed token grid as a (non-persistent) buffer, in the model's dtype as -inf/0.

    A float mask of ``-inf`` and ``0`` is used rather than a boolean one because it exports to ONNX and
    OpenVINO as a plain addition.

    Args:
        height: Token grid height.
        width: Token grid width.
        size: Window side ``k`` (default ``min(height, width) // 2`` as in OneNIP).
    """

    def __init__(self, height: int, width: int, size: int | None = None) -> None:
        super().__init__()
        self.size = size if size is not None else min(height, width) // 2
        forbidden = neighbor_mask(height, width, self.size)
        self.register_buffer(
            "mask", torch.zeros(forbidden.shape).masked_fill(forbidden, float("-inf")), persistent=False
        )

    def forward(self) -> torch.Tensor:
        """The additive attention mask ``(L, L)``."""
        return self.mask
