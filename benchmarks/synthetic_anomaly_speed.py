# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Measure what OneNIP's on-the-fly synthetic anomalies cost against the rest of a training step.

Usage:
    python benchmarks/synthetic_anomaly_speed.py [--root DIR] [--steps 20] \
        [--output benchmarks/results/synthetic_anomaly_speed]

On real training batches (industrial data, 224 px, batch 8, DTD textures, the CPU configuration of
``configs/onenip_cpu.yaml``) it times, per step: generating the synthetic copies, the backbone pass on
them (needed because synthetic images cannot be cached), and the whole training step (forward + backward
+ optimiser), and writes the medians to ``results.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from invocation import command_line, data_root

from anomalib_pnpt import OneNip
from anomalib_pnpt.data import MultiClassMVTecAD


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = data_root(__file__)
    parser.add_argument("--root", type=Path, default=data)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/synthetic_anomaly_speed"))
    args = parser.parse_args()
    if not (args.root / "industrial").is_dir():
        print(f"SKIPPED: {args.root / 'industrial'} not found (set ANOMALIB_PNPT_DATA or --root).")
        return 0
    torch.manual_seed(0)
    model = OneNip(
        backbone="tf_efficientnet_lite2",
        hidden_dim=128,
        num_encoder_layers=2,
        num_decoder_layers=2,
        ffn_dim=512,
        texture_dir=str(args.root / "dtd"),
        cache_features=False,
    )
    datamodule = MultiClassMVTecAD(root=args.root / "industrial", train_batch_size=8, num_workers=0)
    datamodule.setup()
    loader = datamodule.train_dataloader()
    transform = model.pre_processor.transform
    batches = []
    for batch in loader:
        batches.append((transform(batch.image), batch.category_id))
        if len(batches) == args.steps + 2:
            break
    pool_batches = [(x, ids, [f"{i}-{j}" for j in range(len(x))]) for i, (x, ids) in enumerate(batches)]
    model.build_prompt_pool(pool_batches, num_classes=len(datamodule.categories))
    model.anomaly_generator.textures(224, 224)  # loaded once per training run; not part of a step
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=1e-4)
    model.train()
    timings: dict[str, list[float]] = {"synthesis_ms": [], "synthetic_backbone_ms": [], "step_ms": []}
    for index, (images, class_ids) in enumerate(batches):
        start = time.perf_counter()
        synthetic, masks = model.anomaly_generator(images)
        synthesised = time.perf_counter()
        synthetic_features = model.model.extract_features(synthetic)
        extracted = time.perf_counter()
        features = model.model.extract_features(images)
        losses = model.model.training_loss(features, class_ids, images.shape[-2:], synthetic_features, masks)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        end = time.perf_counter()
        if index >= 2:  # warm-up
            timings["synthesis_ms"].append(1000 * (synthesised - start))
            timings["synthetic_backbone_ms"].append(1000 * (extracted - synthesised))
            timings["step_ms"].append(1000 * (end - start))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    share = 100 * medians["synthesis_ms"] / medians["step_ms"]
    args.output.mkdir(parents=True, exist_ok=True)
    command = command_line()
    lines = [
        "# OneNIP synthetic-anomaly cost per training step",
        "",
        f"Command: `{command}`  ",
        f"Batch 8, 224 px, Lite2, CPU ({torch.get_num_threads()} threads), median over {len(timings['step_ms'])} steps",
        "(the clean features computed here too, i.e. without the feature cache).",
        "",
        "| part | ms per step | ms per image |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name[:-3]} | {value:.1f} | {value / 8:.1f} |" for name, value in medians.items()]
    lines += ["", f"Synthesis is {share:.1f} % of a training step."]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
