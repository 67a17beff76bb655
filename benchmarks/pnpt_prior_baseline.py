# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Does PNPT's transformer beat its own normality prior? The pool-prior baseline and per-level maps.

Usage:
    python benchmarks/pnpt_prior_baseline.py [--config configs/pnpt_cpu.yaml] [--epochs 1] [--root DIR] \
        [--output benchmarks/results/pnpt_prior_baseline]

The class-specific normality prompt pool already holds, per class, the mean multi-scale feature map of the
normal training images. Scoring a test image by Eq. 8 with ``F_fuse*`` replaced by that retrieved prior --
no transformer, no training -- is the baseline the learned reconstruction has to beat. This script builds
the pool, trains PNPT for ``--epochs`` (the model's learning curve is flat after the first epoch on the
CPU configuration, see the model README), and evaluates on the test split with the project's per-class
metrics (raw scores, 256 px maps, as the benchmark harness does):

- ``prior only``: Eq. 8 with the retrieved pool prior in place of the reconstruction;
- ``PNPT``: the trained model's own map (Eq. 8, ``w`` of the config);
- ``PNPT, prior stream (w = 1)``: only the prior stream's reconstruction in Eq. 8;
- ``... levels 2-3``: the same maps without the finest (stride-4) level.

It writes ``results.md`` and ``results.csv`` (one row per variant and class) to ``--output``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
import yaml
from anomalib.engine import Engine
from invocation import command_line, data_root
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt import Pnpt
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.evaluation.per_class import METRICS, evaluate_per_class

REPO = Path(__file__).resolve().parents[1]


def variant_maps(model: Pnpt, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(score, map)`` of every variant for one pre-processed batch."""
    net = model.model
    features = net.extract_features(images)
    prior = net.retrieve_prior(features).prompts
    prior_reconstruction, self_reconstruction = net.reconstruct(features, prior if net.use_prior else None)
    generator = net.anomaly_map_generator
    prior_stream = copy.deepcopy(generator)  # same blur and score, all weight on the prior stream
    prior_stream.fusion_weight = 1.0
    size = images.shape[-2:]
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for levels, suffix in ((slice(None), ""), (slice(1, None), ", levels 2-3")):
        # No reconstruction: F_fuse* is the retrieved prior itself (prior_reconstruction=None -> fused = prior).
        maps = generator(features[levels], None, prior[levels], size)
        outputs[f"prior only (no transformer){suffix}"] = maps
        if prior_reconstruction is not None:
            outputs[f"PNPT{suffix}"] = generator(
                features[levels], prior_reconstruction[levels], self_reconstruction[levels], size
            )
            outputs[f"PNPT, prior stream (w = 1){suffix}"] = prior_stream(
                features[levels], prior_reconstruction[levels], self_reconstruction[levels], size
            )
    return {name: (score, anomaly_map) for name, (anomaly_map, score) in outputs.items()}


@torch.no_grad()
def evaluate(model: Pnpt, datamodule: MultiClassMVTecAD) -> pd.DataFrame:
    """Per-class metrics of every variant on the test split."""
    model.eval()
    transform = model.pre_processor.transform
    scores: dict[str, list[torch.Tensor]] = defaultdict(list)
    maps: dict[str, list[torch.Tensor]] = defaultdict(list)
    categories: list[str] = []
    labels: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for batch in datamodule.test_dataloader():
        images = transform(batch.image)
        for name, (score, anomaly_map) in variant_maps(model, images).items():
            scores[name].append(score)
            maps[name].append(anomaly_map.squeeze(1))
        categories += [datamodule.categories[int(i)] for i in batch.category_id]
        labels.append(batch.gt_label)
        mask = batch.gt_mask.float().reshape(len(images), 1, *batch.gt_mask.shape[-2:])
        masks.append(F.interpolate(mask, size=images.shape[-2:], mode="nearest").squeeze(1) > 0.5)
    rows = []
    for name, variant_scores in scores.items():
        table, _ = evaluate_per_class(
            categories, torch.cat(variant_scores), torch.cat(labels), torch.cat(maps[name]), torch.cat(masks)
        )
        for category, row in table.iterrows():
            rows.append({"variant": name, "category": category, **{m: 100 * row[m] for m in METRICS}})
    return pd.DataFrame(rows)


def main() -> int:
    """Build the pool, train PNPT briefly, compare the variants; write the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = data_root(__file__)
    parser.add_argument("--root", type=Path, default=data / "industrial")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "pnpt_cpu.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pnpt_prior_baseline"))
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"SKIPPED: {args.root} not found (set ANOMALIB_PNPT_DATA or --root).")
        return 0
    torch.manual_seed(0)
    init_args = yaml.safe_load(args.config.read_text())["model"]["init_args"]
    model = Pnpt(**init_args)
    datamodule = MultiClassMVTecAD(root=args.root, train_batch_size=8, eval_batch_size=16, num_workers=2)
    with tempfile.TemporaryDirectory() as work_dir:
        engine = Engine(max_epochs=args.epochs, accelerator="cpu", default_root_dir=work_dir, logger=False)
        engine.fit(model=model, datamodule=datamodule)  # the pool callback builds the pool first
    results = evaluate(model, datamodule)
    args.output.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.output / "results.csv", index=False)
    mean = results[results["category"] == "mean"].drop(columns="category").set_index("variant")
    per_class = results[results["category"] != "mean"].pivot(index="variant", columns="category", values="image_AUROC")
    command = command_line()
    lines = [
        "# PNPT against its own normality prior",
        "",
        f"Command: `{command}`  ",
        f"Model: `{args.config.name}` init_args, {args.epochs} epoch(s); data `{args.root.name}`, unified, test split;",
        "raw scores, 256 px maps, metrics in percent.",
        "",
        "## Mean over classes",
        "",
        mean.round(1).to_markdown(),
        "",
        "## Image AUROC per class",
        "",
        per_class.round(1).to_markdown(),
    ]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
