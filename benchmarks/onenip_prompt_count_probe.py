# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""How many normal prompt images per class should OneNIP's pool hold? Measured on one trained checkpoint.

OneNIP reconstructs a test image guided by ONE normal image, retrieved from its pool by the cosine similarity of
pooled features (the paper, Sec. 3.5). With one prompt per class (the default) every magnetic_tile image is
compared with the same tile, although the class's normal tiles differ widely in shape and brightness. The network
was trained with RANDOM same-class prompts from a bank of 32 images per class (``training_prompts_per_class``), so a
pool of several prompts per class -- the query then gets the most similar of them -- needs no retraining: this
script loads the checkpoint with ``prompts_per_class = k``, rebuilds the pool from the TRAINING images (same
selection rule: the ``k`` bank images closest to the class's mean key) and tests. Test images only measure.

Usage:
    python benchmarks/onenip_prompt_count_probe.py --checkpoint <OneNip model.ckpt> [--counts 1,4,16] \
        [--root DIR] [--output benchmarks/results/onenip_prompt_count_probe]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from invocation import command_line, data_root

from anomalib_pnpt import OneNip
from anomalib_pnpt.data import MultiClassMVTecAD

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import evaluate_test_set


def main() -> None:
    """Rebuild the pool with each prompt count and write the per-class table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--counts", default="1,4,16", help="prompts per class (at most the smallest class's images)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/onenip_prompt_count_probe"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    datamodule = MultiClassMVTecAD(root=args.root, eval_batch_size=16, num_workers=2)
    datamodule.setup()
    rows = []
    args.output.mkdir(parents=True, exist_ok=True)
    for count in (int(c) for c in args.counts.split(",")):
        model = OneNip.load_from_checkpoint(args.checkpoint, prompts_per_class=count, map_location="cpu")
        start = time.perf_counter()
        model.fill_prompt_pool(datamodule)  # the training images only
        pool_seconds = time.perf_counter() - start
        # The refiner scale (largest normal S_rec) depends on the prompts: recalibrated on training images, as the
        # model does before every validation.
        scale = model.calibrate_normal_scale_from(datamodule)
        model.eval()
        table = evaluate_test_set(model, datamodule.test_dataloader(), prepare=False)
        for category, row in table.iterrows():
            setting = {"prompts_per_class": count, "pool_s": round(pool_seconds), "refiner_scale": scale}
            rows.append({**setting, "category": category, **dict(row)})
        print(rows[-1], flush=True)
        frame = pd.DataFrame(rows)
        metrics = ["image_AUROC", "pixel_AUROC", "pixel_AP", "PRO"]
        shown = frame[["prompts_per_class", "pool_s", "refiner_scale", "category", *metrics]].copy()
        shown[metrics] = 100 * shown[metrics]
        (args.output / "results.md").write_text(
            "# OneNIP: prompts per class in the pool (one checkpoint, pool rebuilt from training images)\n\n"
            f"Command: `{command_line()}`\n\n" + shown.to_markdown(index=False, floatfmt=".1f") + "\n"
        )


if __name__ == "__main__":
    main()
