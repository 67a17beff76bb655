# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Can ``memory_weight`` be chosen without a test image? Synthetic defects on the validation images decide.

A fused model's ``memory_weight`` ``w`` (``anomalib_pnpt/memory_fusion.py``) weighs the network's map against
PatchCore's memory. Choosing it on the test set would be tuning on the test set. This script chooses it on the
validation images instead (normal images held out from training and from the memory) and on synthetic-defect copies
of them (OneNIP's generator: CutPaste and DTD-texture patches, the same for both models): for each ``w`` of the grid,
the image AUROC per class of normal against defective copies, and its mean. It prints the grid and the chosen ``w``
(the largest mean image AUROC; ties go to the smaller ``w``); the test set is not read. With ``--defects unseen``
it also writes the pixel figures of every ``w`` and the map's choice (below).

Caveat: OneNIP's network (its refiner) was trained on these very kinds of synthetic defects, so for OneNIP the
choice leans to the network; CutPaste moves the image's own normal patches, which the memory cannot see by
construction. ``--defects unseen`` uses defects neither model trained on instead (``unseen_defects.py``: scratches,
stains, holes), ``--copies`` of each validation image.

The rule, fixed before it was first run (stop 26) and used for both models' configs from then on: ``--defects unseen
--copies 4``; per class the image AUROC of the validation images against all their copies; the chosen ``w`` has the
largest mean over the classes; ties go to the smaller ``w``.

The map's rule, fixed before it was first run (stop 27), for ``memory_weight`` when the image score has its own
weight (``memory_score_weight``, which keeps the rule above): ``--defects unseen --copies 4``; per class the pixel
AUROC, pixel AP and PRO (FPR limit 0.3, the harness's) of the maps of the validation images and all their copies,
against the copies' defect masks (the validation images' masks are empty), computed as the harness computes them
(``evaluate_per_class``); the chosen ``w`` has the largest mean of the three figures' means over the classes; ties
go to the smaller ``w``. Why a second rule: the image AUROC rule chose the memory alone for both models, while
on the test set the networks' maps add pixel AP and PRO; a weight chosen by the image figure cannot show that.
Written after session 25/26's test-set ablations were known (the map weights that do best on the test set), so
it is not blind to them; it is fixed before it saw the synthetic copies' pixel figures.

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
from unseen_defects import UnseenDefects

from anomalib_pnpt.evaluation.per_class import evaluate_per_class
from anomalib_pnpt.pre_processing import backbone_normalization
from anomalib_pnpt.synthetic_anomalies import SyntheticAnomalyGenerator

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
PIXEL_FIGURES = ("pixel_AUROC", "pixel_AP", "PRO")


@torch.no_grad()
def network_and_memory_maps(model: Any, images: torch.Tensor) -> torch.Tensor:
    """``(2, B, H, W)``: the network's map ``S_net`` and the memory's ``s * S_mem / m_c`` of pre-processed images."""
    found = maps_of(model, images)
    memory = memory_map(model, found["memory"], images.shape[-2:])
    return torch.stack([found["network"][:, 0], memory[:, 0]])


def fused(maps: torch.Tensor, weight: float) -> torch.Tensor:
    """The fused map ``(1 - w) S_net + w S_mem`` ``(N, 1, H, W)`` of :func:`network_and_memory_maps`' pair."""
    return ((1 - weight) * maps[0] + weight * maps[1]).unsqueeze(1)


def chosen(frame: pd.DataFrame, column: str) -> float:
    """The ``w`` with the largest ``column``; ``idxmax`` takes the first, i.e. the smallest ``w``, on ties."""
    return float(frame.loc[frame[column].idxmax(), "memory_weight"])


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
        generator = UnseenDefects(mean=mean, std=std, seed=0).copies_and_masks
    else:
        training_generator = SyntheticAnomalyGenerator(texture_dir=args.texture_dir, mean=mean, std=std)
        generator = lambda images: (training_generator(images)[0], None)  # noqa: E731  (no masks kept)
    maps, masks, names = [], [], []
    for batch in datamodule.val_dataloader():
        images = model.pre_processor.transform(batch.image)
        batch_names = [categories[int(i)] for i in batch.category_id]
        maps.append(network_and_memory_maps(model, images))
        masks.append(torch.zeros(len(images), *images.shape[-2:], dtype=torch.bool))
        names += batch_names
        for _ in range(args.copies):
            copies, copy_masks = generator(images)
            maps.append(network_and_memory_maps(model, copies))
            masks.append(copy_masks if copy_masks is not None else torch.zeros_like(masks[-1]))
            names += batch_names
    all_maps, all_masks = torch.cat(maps, 1), torch.cat(masks)
    # Each batch added its normal images, then its copies: every (copies + 1)-th chunk is normal.
    labels = torch.cat([torch.full((len(m),), int(index % (args.copies + 1) > 0)) for index, m in enumerate(masks)])
    pool = 1 if is_pnpt(model) else model.model.anomaly_map_generator.score_pool
    pixel = args.defects == "unseen"  # the training generator's masks are not kept
    rows = []
    for weight in WEIGHTS:
        fused_maps = fused(all_maps, weight)
        scores = pooled_max(fused_maps, pool)
        table, _ = evaluate_per_class(
            names, scores, labels, fused_maps[:, 0] if pixel else None, all_masks if pixel else None
        )
        row: dict[str, Any] = {"memory_weight": weight}
        for figure in ("image_AUROC", *(PIXEL_FIGURES if pixel else ())):
            for name in categories:
                row[f"{name} {figure}"] = round(100 * float(table.loc[name, figure]), 2)
            row[figure] = round(100 * float(table.loc["mean", figure]), 2)
        if pixel:
            row["map rule"] = round(sum(row[figure] for figure in PIXEL_FIGURES) / len(PIXEL_FIGURES), 2)
        rows.append(row)
    frame = pd.DataFrame(rows)
    choice = f"chosen memory_weight (image AUROC rule): **{chosen(frame, 'image_AUROC')}**"
    if pixel:
        figures = ", ".join(PIXEL_FIGURES)
        choice += f"; chosen map weight (pixel rule, the mean of {figures}): **{chosen(frame, 'map rule')}**"
    print(frame.to_string(index=False), f"\n{choice}", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "results.csv", index=False)
    counts = ", ".join(f"{name} {names.count(name) // (args.copies + 1)}" for name in categories)
    (args.output / "results.md").write_text(
        f"Command: `{command_line()}`\n\nCheckpoint: `{args.checkpoint}`\n\nFigures (%) of the validation images "
        f"({counts}) and {args.copies} synthetic-defect copies of each ({args.defects} defects), per class and the "
        f"mean over classes; {time.perf_counter() - start:.0f} s. {choice}\n\n{frame.to_markdown(index=False)}\n"
    )


if __name__ == "__main__":
    main()
