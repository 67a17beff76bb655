# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Building blocks of OneNIP: neighbour mask, position embedding, encoder and bidirectional decoder."""

from anomalib_pnpt.models.onenip.components.neighbor_mask import NeighborMask, neighbor_mask
from anomalib_pnpt.models.onenip.components.position_embedding import LearnedPositionEmbedding
from anomalib_pnpt.models.onenip.components.transformer import BidirectionalDecoderLayer, EncoderLayer

__all__ = [
    "BidirectionalDecoderLayer",
    "EncoderLayer",
    "LearnedPositionEmbedding",
    "NeighborMask",
    "neighbor_mask",
]
