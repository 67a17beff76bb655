# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib models of this package: the two paper models and a network fused with a patch memory."""

from anomalib_pnpt.models.memory import NetworkWithMemory
from anomalib_pnpt.models.onenip import OneNip, OneNipModel
from anomalib_pnpt.models.pnpt import Pnpt, PnptModel

__all__ = ["NetworkWithMemory", "OneNip", "OneNipModel", "Pnpt", "PnptModel"]
