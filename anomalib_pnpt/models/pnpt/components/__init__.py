# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT building blocks: HPE, SACE, CSCD."""

from anomalib_pnpt.models.pnpt.components.cscd import CscdLayer
from anomalib_pnpt.models.pnpt.components.hpe import HierarchicalPatchEmbedding, sincos_position_embedding
from anomalib_pnpt.models.pnpt.components.sace import SaceLayer

__all__ = [
    "CscdLayer",
    "HierarchicalPatchEmbedding",
    "SaceLayer",
    "sincos_position_embedding",
]
