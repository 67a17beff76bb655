# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT's Eq. 8 fusion weight chosen without a test image: validation images against unseen synthetic defects.

Eq. 8 fuses the two streams' reconstructions, ``F_fuse* = w F_prior* + (1 - w) F_self*``, and the paper fixes no
``w`` for our setting (``fusion_weight``, default 0.5). The self stream reads the input's own tokens, so it can copy
a defect as well as a normal patch; the prior stream starts from the class's prompts. A trained checkpoint is scored
at every ``w`` of the grid (no retraining: ``w`` only mixes two reconstructions the network already made), by the
epoch choice's rule (``epoch_selection.py``, fixed at stop 30 before either was run): the model's own maps and
scores of the validation images and 4 unseen-defect copies of each (scratches, stains, holes); the mean of the image
AUROC, pixel AUROC, pixel AP and PRO class means; the largest wins, ties go to the earlier weight of the grid, whose
first is the paper's 0.5. The test figures of every ``w`` (maps at 128 px, as the learning curve's) are reported
beside, never used to choose.

Usage:
    python benchmarks/pnpt_fusion_weight_selection.py --checkpoint <Pnpt model.ckpt> --output <dir> [--root DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from epoch_selection import FIGURES, defect_set_figures, unseen_defect_set
from invocation import command_line, data_root
from learning_curve import evaluate_test_set

from anomalib_pnpt.class_commands import load_checkpoint_model
from anomalib_pnpt.data import MultiClassMVTecAD

GRID = (0.5, 0.0, 0.25, 0.75, 1.0)  # the paper's weight first: it wins ties


def main() -> None:
    """Score every weight on validation images and unseen defects, and on the test set; write ``results.{csv,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    model, saved = load_checkpoint_model(args.checkpoint)
    categories = saved.get("prompt_categories") or model.prompt_categories
    # The harness's split: the same seeded tenth of each class's training images was held out from training.
    datamodule = MultiClassMVTecAD(root=args.root, categories=categories, eval_batch_size=16, num_workers=2)
    datamodule.setup()
    defects = unseen_defect_set(model, datamodule.val_dataloader())
    generator = model.model.anomaly_map_generator
    rows = []
    for weight in GRID:
        generator.fusion_weight = weight
        table, score = defect_set_figures(model, defects)
        test = evaluate_test_set(model, datamodule.test_dataloader(), prepare=False)
        row = {"fusion_weight": weight, "validation score": round(100 * score, 2)}
        row |= {f"validation {figure}": round(100 * float(table.loc["mean", figure]), 2) for figure in FIGURES}
        row |= {f"test {figure}": round(100 * float(test.loc["mean", figure]), 2) for figure in FIGURES}
        row |= {f"test {name} image_AUROC": round(100 * float(test.loc[name, "image_AUROC"]), 2) for name in categories}
        rows.append(row)
        print(row, flush=True)
    frame = pd.DataFrame(rows)
    choice = float(frame.loc[frame["validation score"].idxmax(), "fusion_weight"])
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "results.csv", index=False)
    (args.output / "results.md").write_text(
        f"Command: `{command_line()}`\n\nCheckpoint: `{args.checkpoint}`\n\nFigures (%): validation images and 4 "
        f"unseen-defect copies of each (the rule's), and the test set (maps at 128 px, reported, not used); "
        f"{time.perf_counter() - start:.0f} s. Chosen fusion_weight: **{choice}**\n\n{frame.to_markdown(index=False)}\n"
    )
    print(f"chosen fusion_weight: {choice}")


if __name__ == "__main__":
    main()
