# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Can ``memory_weight`` be chosen without a test image? Synthetic defects on the validation images decide.

A fused model's ``memory_weight`` ``w`` (``anomalib_pnpt/memory_fusion.py``) weighs the network's map against
PatchCore's memory. Choosing it on the test set would be tuning on the test set. This script chooses it on the
validation images instead (normal images held out from training and from the memory) and on synthetic-defect copies
of them (OneNIP's generator: CutPaste and DTD-texture patches, the same for both models): for each ``w`` of the grid,
the image AUROC per class of normal against defective copies, and its mean. It prints the grid and the chosen ``w``
(the largest mean image AUROC; ties go to the smaller ``w``); the test set is not read.

Caveat: OneNIP's network (its refiner) was trained on these very kinds of synthetic defects, so for OneNIP the
choice leans to the network; CutPaste moves the image's own normal patches, which the memory cannot see by
construction. ``--defects unseen`` uses defects neither model trained on instead (``unseen_defects.py``: scratches,
stains, holes), ``--copies`` of each validation image.

The rule, fixed before it was first run (stop 26) and used for both models' configs from then on: ``--defects unseen
--copies 4``; per class the image AUROC of the validation images against all their copies; the chosen ``w`` has the
largest mean over the classes; ties go to the smaller ``w``.

Usage:
    python benchmarks/memory_weight_selection.py --checkpoint <OneNip or Pnpt model.ckpt with memory_weight > 0> \
        --output <dir> [--root DIR] [--texture_dir DIR] [--rebuild_memory] [--defects unseen --copies 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from invocation import command_line, data_root
from memory_image_score_probe import fused_model_and_data, is_pnpt, maps_of, memory_map, pooled_max
from sklearn.metrics import roc_auc_score
from unseen_defects import UnseenDefects

from anomalib_pnpt.models.onenip.synthetic_anomalies import SyntheticAnomalyGenerator
from anomalib_pnpt.pre_processing import backbone_normalization

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def scores_per_weight(model: Any, images: torch.Tensor) -> torch.Tensor:
    """Image scores ``(len(WEIGHTS), B)`` of pre-processed images, the model's rule for each ``w``."""
    found = maps_of(model, images)
    memory = memory_map(model, found["memory"], images.shape[-2:])
    pool = 1 if is_pnpt(model) else model.model.anomaly_map_generator.score_pool
    return torch.stack([pooled_max((1 - w) * found["network"] + w * memory, pool) for w in WEIGHTS])


def main() -> None:
    """Score the validation images and their synthetic copies for every ``w``; write ``results.{csv,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--texture_dir", type=Path, default=data_root(__file__) / "dtd")
    parser.add_argument("--rebuild_memory", action="store_true", help="rebuild the memories of all training images")
    parser.add_argument("--defects", choices=("training", "unseen"), default="training")
    parser.add_argument("--copies", type=int, default=1, help="defective copies of each validation image")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()
    model, datamodule = fused_model_and_data(args.checkpoint, args.root, args.rebuild_memory)
    categories = datamodule.categories
    mean, std = backbone_normalization(model.hparams["backbone"])
    if args.defects == "unseen":
        generator = UnseenDefects(mean=mean, std=std, seed=0)
    else:
        training_generator = SyntheticAnomalyGenerator(texture_dir=args.texture_dir, mean=mean, std=std)
        generator = lambda images: training_generator(images)[0]  # noqa: E731
    normal, defective, classes = [], [], []
    for batch in datamodule.val_dataloader():
        images = model.pre_processor.transform(batch.image)
        normal.append(scores_per_weight(model, images))
        defective.append(torch.stack([scores_per_weight(model, generator(images)) for _ in range(args.copies)], 2))
        classes.append(batch.category_id.long())
    normal_scores, defective_scores, category = torch.cat(normal, 1), torch.cat(defective, 1), torch.cat(classes)
    rows = []
    for index, weight in enumerate(WEIGHTS):
        row: dict[str, Any] = {"memory_weight": weight}
        for class_id, name in enumerate(categories):
            chosen = category == class_id
            scores = torch.cat([normal_scores[index, chosen], defective_scores[index, chosen].flatten()])
            labels = [0] * int(chosen.sum()) + [1] * int(chosen.sum()) * args.copies
            row[name] = round(100 * roc_auc_score(labels, scores.numpy()), 2)
        row["mean"] = round(sum(row[name] for name in categories) / len(categories), 2)
        rows.append(row)
    frame = pd.DataFrame(rows)
    chosen_weight = float(frame.loc[frame["mean"].idxmax(), "memory_weight"])  # idxmax: the first, smallest w
    print(frame.to_string(index=False), f"\nchosen memory_weight: {chosen_weight}", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "results.csv", index=False)
    counts = ", ".join(f"{name} {int((category == i).sum())}" for i, name in enumerate(categories))
    (args.output / "results.md").write_text(
        f"Command: `{command_line()}`\n\nCheckpoint: `{args.checkpoint}`\n\nImage AUROC (%) of the validation images "
        f"({counts}) against {args.copies} synthetic-defect copies of each ({args.defects} defects); "
        f"{time.perf_counter() - start:.0f} s. Chosen memory_weight: **{chosen_weight}**\n\n"
        f"{frame.to_markdown(index=False)}\n"
    )


if __name__ == "__main__":
    main()
