# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-pnpt``: anomalib's own CLI with this plugin registered, and the plugin's own subcommands.

Every anomalib subcommand works as usual (``train``, ``test``, ``predict``, ``export``); ``benchmark`` here accepts
plugin class paths and exits non-zero when a job fails (:mod:`anomalib_pnpt.benchmarking.anomalib_pipeline`).
The plugin adds ``add-class`` / ``remove-class``, which change a trained model's classes in its checkpoint
(:mod:`anomalib_pnpt.class_commands`), and ``demo-data``, which writes the embedded demo classes
(:mod:`anomalib_pnpt.data.demo`). ``anomalib-pnpt --help`` lists them above anomalib's own.

Example:
    ``anomalib-pnpt benchmark --config benchmarks/configs/anomalib_benchmark_industrial.yaml``
"""

from __future__ import annotations

PLUGIN_COMMANDS = {
    "add-class": "add (or replace) a product class in a trained checkpoint from a folder of its normal images",
    "remove-class": "remove a product class from a trained checkpoint",
    "demo-data": "write the embedded demo classes (disc, tiles, weave; the logical class kit) in MVTec AD layout",
}


def main() -> None:
    """Run a plugin subcommand, or register the plugin and hand over to anomalib's CLI."""
    import sys

    from anomalib_pnpt.class_commands import COMMANDS
    from anomalib_pnpt.class_commands import main as class_main

    command = sys.argv[1] if len(sys.argv) > 1 else "--help"
    if command in COMMANDS:
        class_main(sys.argv[1:])
        return
    if command == "demo-data":
        from anomalib_pnpt.data.demo import main as demo_main

        demo_main(sys.argv[2:])
        return
    if command in {"-h", "--help"}:
        print("anomalib-pnpt subcommands (each with --help):")
        for name, text in PLUGIN_COMMANDS.items():
            print(f"  {name:<14} {text}")
        print("and anomalib's own:\n")
    from anomalib.cli.cli import main as anomalib_main

    from anomalib_pnpt.benchmarking.anomalib_pipeline import register

    register()
    anomalib_main()


if __name__ == "__main__":
    main()
