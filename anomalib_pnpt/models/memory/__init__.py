# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A prompt-pool network fused with a per-class patch memory (beyond both papers)."""

from anomalib_pnpt.models.memory.lightning_model import NetworkWithMemory

__all__ = ["NetworkWithMemory"]
