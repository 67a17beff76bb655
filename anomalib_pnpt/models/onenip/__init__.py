# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP: One Normal Image Prompt (Gao, ECCV 2024)."""

from anomalib_pnpt.models.onenip.lightning_model import OneNip
from anomalib_pnpt.models.onenip.torch_model import OneNipModel

__all__ = ["OneNip", "OneNipModel"]
