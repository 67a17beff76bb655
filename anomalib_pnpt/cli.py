# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-pnpt``: anomalib's own CLI with this plugin registered.

Every anomalib subcommand works as usual (``train``, ``test``, ``predict``, ``export``); the differences are
``benchmark``, which here accepts plugin class paths and exits non-zero when a job fails
(see :mod:`anomalib_pnpt.benchmarking.anomalib_pipeline`), and ``add-class`` / ``remove-class``, which change a
trained model's classes in its checkpoint (see :mod:`anomalib_pnpt.class_commands`).

Example:
    ``anomalib-pnpt benchmark --config benchmarks/configs/anomalib_benchmark_industrial.yaml``
"""

from __future__ import annotations


def main() -> None:
    """Run ``add-class`` / ``remove-class``, or register the plugin and hand over to anomalib's CLI."""
    import sys

    from anomalib_pnpt.class_commands import COMMANDS
    from anomalib_pnpt.class_commands import main as class_main

    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        class_main(sys.argv[1:])
        return
    from anomalib.cli.cli import main as anomalib_main

    from anomalib_pnpt.benchmarking.anomalib_pipeline import register

    register()
    anomalib_main()


if __name__ == "__main__":
    main()
