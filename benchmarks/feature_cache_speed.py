# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Measure PNPT training epoch time with and without the backbone-feature cache.

Usage:
    python benchmarks/feature_cache_speed.py [--root DIR] [--epochs 2] [--output benchmarks/results/feature_cache]

Trains the CPU configuration (Lite2, hidden 128) on the unified industrial data twice — ``cache_features``
on and off — and records the wall time of every training epoch (validation disabled). With the cache, the
first epoch fills it (it costs as much as an uncached epoch); later epochs only read images and run the
transformer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from anomalib.engine import Engine
from invocation import command_line, data_root
from lightning.pytorch import Callback, seed_everything

from anomalib_pnpt import Pnpt
from anomalib_pnpt.data import MultiClassMVTecAD

CPU_CONFIG = {
    "backbone": "tf_efficientnet_lite2",
    "hidden_dim": 128,
    "num_semantic_tokens": 20,
    "ffn_dim": 512,
    "learning_rate": 5e-4,
}


class EpochTimer(Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001, D102
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001, D102
        self.times.append(time.perf_counter() - self._start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = data_root(__file__)
    parser.add_argument("--root", type=Path, default=data / "industrial")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/feature_cache"))
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"SKIPPED: dataset root '{args.root}' not found (set ANOMALIB_PNPT_DATA or --root).")
        return 0
    rows = []
    for cache in (True, False):
        seed_everything(0)
        timer = EpochTimer()
        datamodule = MultiClassMVTecAD(root=args.root, train_batch_size=8, num_workers=2, per_class_evaluation=False)
        model = Pnpt(**CPU_CONFIG, cache_features=cache)
        engine = Engine(
            max_epochs=args.epochs,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
            callbacks=[timer],
            default_root_dir=args.output / "runs",
        )
        engine.fit(model, datamodule=datamodule)
        rows += [{"cache_features": cache, "epoch": i + 1, "seconds": t} for i, t in enumerate(timer.times)]
        print(rows[-args.epochs :], flush=True)
    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "epoch_times.csv", index=False)
    command = command_line()
    text = f"Command: `{command}` (2 CPU cores, {len(datamodule.train_data)} training images, batch 8)\n\n"
    (args.output / "epoch_times.md").write_text(text + table.round(1).to_markdown(index=False) + "\n")
    print(text + table.round(1).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
