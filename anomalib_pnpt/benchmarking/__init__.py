# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib's ``benchmark`` pipeline made plugin-aware (the ``anomalib-pnpt benchmark`` command).

The project's own measurement harness (unified vs separate runs, learning curves) is lab code and lives in the
repository's ``benchmarks/`` folder, not in the installed package.
"""

from anomalib_pnpt.benchmarking.anomalib_pipeline import register

__all__ = ["register"]
