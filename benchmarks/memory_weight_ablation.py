# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Ablation of a trained-class patch memory (``memory_weight``, OneNIP or PNPT) on ONE checkpoint, no training.

Each row loads the same checkpoint with other memory settings, rebuilds the memories where their features change
(from the training images), re-calibrates the per-class post-processor on the validation images (held out from
training) and tests, with the harness's per-class metrics:
- ``memory_weight 0``: the network's map alone (the paper's model);
- ``memory_weight 1``: the patch memory alone; 0.25 and 0.75 between (an ablation on the test set, not a choice);
- the model as trained, for reference;
- ``memory coreset 0.1`` / ``0.01``: the memory at PatchCore's default coreset ratio, or a tenth of it;
- ``memory per-layer`` / ``joined aggregation``: each map's 3x3 mean before joining (PatchCore's order) or after;
- ``memory of all images``: the memory made again from all of a class's images once ``m_c`` is measured on the
  held-out ones (``memory_all_images``), alone (``memory_weight 1``) and fused;
- ``map weight ... and score weight 1``: the image score from the memory alone (``memory_score_weight`` 1), the map
  fused at the given ``memory_weight``;
- ``memory stride 16``: the memory of all of the network's stages at stride 16 (coreset 0.1), OneNIP's first one.

Usage:
    python benchmarks/memory_weight_ablation.py --checkpoint <OneNip or Pnpt model.ckpt> [--root DIR] \
        [--output benchmarks/results/onenip_memory_cpu/ablation] [--variants "memory_weight 0,as trained"]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from anomalib.engine import Engine
from invocation import command_line, data_root

from anomalib_pnpt.class_commands import load_checkpoint_model
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.evaluation import PerClassEvaluation
from anomalib_pnpt.evaluation.per_class import METRICS

VARIANTS: dict[str, dict[str, Any]] = {
    "as trained": {},
    "memory_weight 0 (network alone, the paper)": {"memory_weight": 0.0},
    "memory_weight 0.25": {"memory_weight": 0.25},
    "memory_weight 0.75": {"memory_weight": 0.75},
    "memory_weight 1 (memory alone)": {"memory_weight": 1.0},
    "memory coreset 0.1 (PatchCore's default ratio)": {"memory_sampling_ratio": 0.1},
    "memory per-layer aggregation (PatchCore's order)": {"memory_aggregation": "per_layer"},
    "memory joined aggregation (the earlier order)": {"memory_aggregation": "joined"},
    "memory coreset 0.01": {"memory_sampling_ratio": 0.01},
    "memory per-layer aggregation and coreset 0.1": {"memory_aggregation": "per_layer", "memory_sampling_ratio": 0.1},
    "memory of all images (held-out ones added once m_c is measured)": {"memory_all_images": True},
    "memory of all images and memory_weight 1": {"memory_all_images": True, "memory_weight": 1.0},
    "memory of all images and memory_weight 0": {"memory_all_images": True, "memory_weight": 0.0},
    "memory of all images and memory_weight 0.75": {"memory_all_images": True, "memory_weight": 0.75},
    "memory of all images and map weight 0.25 and score weight 1": {
        "memory_all_images": True,
        "memory_weight": 0.25,
        "memory_score_weight": 1.0,
    },
    "memory of all images and map weight 0.5 and score weight 1": {
        "memory_all_images": True,
        "memory_weight": 0.5,
        "memory_score_weight": 1.0,
    },
    "memory of all images and map weight 0.75 and score weight 1": {
        "memory_all_images": True,
        "memory_weight": 0.75,
        "memory_score_weight": 1.0,
    },
    "memory stride 16 of all stages and coreset 0.1": {
        "memory_stride": 16,
        "memory_layers": None,
        "memory_sampling_ratio": 0.1,
    },
}


def main() -> None:
    """Evaluate every variant and write ``results.{csv,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/onenip_memory_cpu/ablation"))
    parser.add_argument(
        "--variants", default=None, help="comma-separated names (their text up to ' (', without commas) to run"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    chosen = set(args.variants.split(",")) if args.variants else None
    rows = []
    for name, overrides in VARIANTS.items():
        if chosen is not None and name.split(" (")[0] not in chosen:
            continue
        start = time.perf_counter()
        model, checkpoint = load_checkpoint_model(args.checkpoint, **overrides)
        categories = checkpoint.get("prompt_categories") or model.prompt_categories
        datamodule = MultiClassMVTecAD(
            root=args.root,
            categories=categories,
            train_batch_size=16,
            eval_batch_size=16,
            num_workers=2,
            per_class_evaluation=False,
            val_split_mode="from_train",
        )
        datamodule.setup()
        rebuild = {
            "memory_stride",
            "memory_layers",
            "memory_sampling_ratio",
            "memory_aggregation",
            "memory_all_images",
        } & set(overrides)
        if rebuild or (model.model.memory_weight > 0 and model.model.class_memory.patches.numel() == 0):
            model.fill_class_memory(datamodule)
        evaluation = PerClassEvaluation(output_dir=args.output / "jobs" / name.split(" (")[0].replace(" ", "_"))
        engine = Engine(
            default_root_dir=args.output / "jobs", callbacks=[evaluation], logger=False, enable_progress_bar=False
        )
        engine.validate(model, datamodule=datamodule)  # per-class calibration, on validation images
        engine.test(model, datamodule=datamodule)
        table = evaluation.table.loc[list(categories), list(METRICS)]
        table.loc["mean"] = table.mean()  # the harness's mean: over the classes
        for category, values in table.iterrows():
            rows.append(
                {
                    "variant": name,
                    "category": category,
                    **{m: round(100 * float(values[m]), 1) for m in METRICS},
                    "pooled_AUROC_raw": round(100 * evaluation.pooled["image_AUROC"], 1),
                    "seconds": round(time.perf_counter() - start),
                }
            )
        print(pd.DataFrame(rows).tail(len(categories) + 1).to_string(index=False), flush=True)
    frame = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "results.csv", index=False)
    (args.output / "results.md").write_text(
        f"Command: `{command_line()}`\n\nCheckpoint: `{args.checkpoint}`\n\n{frame.to_markdown(index=False)}\n"
    )


if __name__ == "__main__":
    main()
