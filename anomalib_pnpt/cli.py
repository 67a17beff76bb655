# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-pnpt``: anomalib's own CLI with this plugin registered.

Every anomalib subcommand works as usual (``train``, ``test``, ``predict``, ``export``); the difference is
``benchmark``, which here accepts plugin class paths and exits non-zero when a job fails
(see :mod:`anomalib_pnpt.benchmarking.anomalib_pipeline`).

Example:
    ``anomalib-pnpt benchmark --config benchmarks/configs/anomalib_benchmark_industrial.yaml``
"""

from __future__ import annotations


def main() -> None:
    """Register the plugin, then hand over to anomalib's CLI."""
    from anomalib.cli.cli import main as anomalib_main

    from anomalib_pnpt.benchmarking.anomalib_pipeline import register

    register()
    anomalib_main()


if __name__ == "__main__":
    main()
