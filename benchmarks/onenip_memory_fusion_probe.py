# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Does a per-class patch memory add to a TRAINED OneNIP's map? Measured on one checkpoint, no training.

The accuracy issue's question is why OneNIP trails PatchCore on magnetic_tile (89 against 96.8 image AUROC). The
patch memory that scores classes added after training (:class:`anomalib_pnpt.patch_memory.ClassPatchMemory`: a
coreset of the class's 3x3-averaged patch vectors, nearest-patch distance) found 93.9 on magnetic_tile from
OneNIP's own backbone features. This probe builds every trained class's memory from its TRAINING images and
scores the test set with

    map = (1 - beta) * OneNIP's map + beta * refiner_scale * memory_map / memory_scale[class]

where ``memory_scale[class]`` is the largest memory map value over the class's VALIDATION normal images (held out
from training; no test image calibrates anything) and ``refiner_scale`` is OneNIP's own (the largest ``S_rec`` of
normal training images), so both terms span the same range on normal images. ``beta = 0`` is OneNIP, ``1`` the
memory alone; ``0.5`` was fixed before measuring (as the paper's ``alpha``), the others are an ablation on the
test set, not a tuning. The image score is OneNIP's (max of the 16 x 16 average-pooled map).

Usage:
    python benchmarks/onenip_memory_fusion_probe.py --checkpoint <OneNip model.ckpt> [--root DIR] \
        [--betas 0,0.25,0.5,0.75,1] [--output benchmarks/results/onenip_memory_fusion_probe]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from invocation import command_line, data_root
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt import OneNip
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.evaluation.per_class import evaluate_per_class
from anomalib_pnpt.patch_memory import ClassPatchMemory

sys.path.insert(0, str(Path(__file__).resolve().parent))

MAP_SIZE = 128


@torch.no_grad()
def main() -> None:
    """Build the memories, score the test set at every beta, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--betas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--sampling-ratio", type=float, default=0.1)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/onenip_memory_fusion_probe"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = OneNip.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    net = model.model
    datamodule = MultiClassMVTecAD(root=args.root, eval_batch_size=16, train_batch_size=16, num_workers=2)
    datamodule.setup()
    categories = list(datamodule.categories)
    if categories != model.prompt_categories:
        msg = f"The datamodule's classes {categories} are not the checkpoint's {model.prompt_categories}."
        raise ValueError(msg)

    def features_of(loader: object) -> tuple[torch.Tensor, list, list]:
        features, classes, batches = [], [], []
        for batch in loader:
            images = model.pre_processor.transform(batch.image)
            features.append(net.extract_features(images))
            classes += list(batch.category)
            batches.append(batch)
        return torch.cat(features), classes, batches

    start = time.perf_counter()
    train_features, train_classes, _ = features_of(datamodule.train_dataloader())
    memory = ClassPatchMemory(sampling_ratio=args.sampling_ratio)
    sizes = {}
    for index, name in enumerate(categories):
        members = torch.tensor([c == name for c in train_classes])
        sizes[name] = memory.set_class(index, train_features[members])
    build_seconds = time.perf_counter() - start
    print(f"memories {sizes} built in {build_seconds:.0f} s", flush=True)

    def memory_map(features: torch.Tensor, class_ids: torch.Tensor, size: torch.Size) -> torch.Tensor:
        local = memory.local_patches(features)
        return net.anomaly_map_generator.reconstruction_error(local, memory.nearest_patches(local, class_ids), size)

    # Per-class scale of the memory map: its largest value on the class's VALIDATION normal images.
    scale = defaultdict(float)
    for batch in datamodule.val_dataloader():
        images = model.pre_processor.transform(batch.image)
        ids = torch.tensor([categories.index(c) for c in batch.category])
        values = memory_map(net.extract_features(images), ids, images.shape[-2:]).amax(dim=(1, 2, 3))
        for name, value, label in zip(batch.category, values.tolist(), batch.gt_label.tolist(), strict=True):
            if label == 0:
                scale[name] = max(scale[name], value)
    print(f"memory scales (validation normals) {dict(scale)}", flush=True)
    memory_scale = torch.tensor([scale[name] for name in categories])
    refiner_scale = float(net.anomaly_map_generator.refiner_scale)

    betas = [float(b) for b in args.betas.split(",")]
    maps = {beta: [] for beta in betas}
    scores = {beta: [] for beta in betas}
    classes, labels, masks = [], [], []
    pool = net.anomaly_map_generator.score_pool
    for batch in datamodule.test_dataloader():
        images = model.pre_processor.transform(batch.image)
        raw, class_ids, _ = net.predict(images)
        features = net.extract_features(images)
        memory_part = refiner_scale * memory_map(features, class_ids, images.shape[-2:])
        memory_part = memory_part / memory_scale[class_ids].view(-1, 1, 1, 1)
        for beta in betas:
            fused = (1 - beta) * raw.anomaly_map + beta * memory_part
            pooled = F.avg_pool2d(fused, pool, stride=1) if pool > 1 else fused
            scores[beta].append(pooled.flatten(1).amax(dim=1))
            maps[beta].append(F.interpolate(fused, size=(MAP_SIZE, MAP_SIZE), mode="bilinear")[:, 0])
        mask = batch.gt_mask.float()[:, None]
        masks.append(F.interpolate(mask, size=(MAP_SIZE, MAP_SIZE), mode="nearest").bool()[:, 0])
        labels.append(batch.gt_label)
        classes += list(batch.category)
    rows = []
    for beta in betas:
        table, _ = evaluate_per_class(
            classes, torch.cat(scores[beta]), torch.cat(labels), torch.cat(maps[beta]), torch.cat(masks)
        )
        for category, row in table.iterrows():
            rows.append({"beta": f"beta {beta:g}", "category": category, **dict(row)})  # text: never rounded
    frame = pd.DataFrame(rows)
    metrics = ["image_AUROC", "pixel_AUROC", "pixel_AP", "PRO"]
    shown = frame[["beta", "category", *metrics]].copy()
    shown[metrics] = 100 * shown[metrics]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.md").write_text(
        "# OneNIP's map fused with a per-class patch memory (one checkpoint, no training)\n\n"
        f"Command: `{command_line()}`\n\n"
        f"Memory patches per class (coreset {args.sampling_ratio}): {sizes}; built in {build_seconds:.0f} s. "
        f"Memory scales (largest value on validation normals): "
        f"{ {k: round(v, 3) for k, v in scale.items()} }; refiner scale {refiner_scale:.3f}.\n\n"
        + shown.to_markdown(index=False, floatfmt=".1f")
        + "\n"
    )
    print(shown.to_markdown(index=False, floatfmt=".1f"), flush=True)


if __name__ == "__main__":
    main()
