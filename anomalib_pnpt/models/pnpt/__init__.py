# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT: Prior Normality Prompt Transformer (Yao et al., IEEE TII 2024)."""

from anomalib_pnpt.models.pnpt.lightning_model import Pnpt
from anomalib_pnpt.models.pnpt.torch_model import PnptModel

__all__ = ["Pnpt", "PnptModel"]
