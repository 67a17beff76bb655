# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib models of this package."""

from anomalib_pnpt.models.onenip import OneNip, OneNipModel
from anomalib_pnpt.models.pnpt import Pnpt, PnptModel

__all__ = ["OneNip", "OneNipModel", "Pnpt", "PnptModel"]
