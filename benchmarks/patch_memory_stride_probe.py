# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""How fine must a class's patch memory be? magnetic_tile scored by a stride-8 memory of OneNIP's backbone maps.

``ClassPatchMemory`` is built from OneNIP's features at stride 16 (the network's token grid). PatchCore keeps its
memory at stride 8. This probe takes a trained OneNIP checkpoint's frozen backbone, resizes the chosen stages' maps
to stride 8, averages each location with its 3 x 3 neighbours (zero padding counted, as PatchCore), keeps a greedy
k-center coreset (1 %) of the class's TRAINING patches, and scores the test images by the distance to the nearest
memory patch (upsampled, 16 x 16 average-pooled maximum, as OneNIP's score). No training; test images only measure.

Usage:
    python benchmarks/patch_memory_stride_probe.py --checkpoint <OneNip model.ckpt> [--category magnetic_tile] \
        [--root DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from invocation import data_root
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt import OneNip
from anomalib_pnpt.coreset import FastKCenterGreedy
from anomalib_pnpt.data import MultiClassMVTecAD


@torch.no_grad()
def main() -> None:
    """Build the stride-8 memory for each stage choice and print the image AUROC."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--category", default="magnetic_tile")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = OneNip.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    extractor = model.model.feature_extractor
    datamodule = MultiClassMVTecAD(
        root=args.root, categories=[args.category], eval_batch_size=16, train_batch_size=16, num_workers=2
    )
    datamodule.setup()

    def features(loader: object, stages: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        maps, labels = [], []
        for batch in loader:
            images = model.pre_processor.transform(batch.image)
            levels = extractor(images)
            size = (images.shape[-2] // 8, images.shape[-1] // 8)
            joined = torch.cat(
                [F.interpolate(levels[i], size=size, mode="bilinear", align_corners=True) for i in stages], 1
            )
            maps.append(F.avg_pool2d(joined, 3, 1, 1))
            labels.append(batch.gt_label)
        return torch.cat(maps), torch.cat(labels)

    for stages in ((2, 3), (0, 1, 2, 3)):
        start = time.perf_counter()
        train, _ = features(datamodule.train_dataloader(), stages)
        test, labels = features(datamodule.test_dataloader(), stages)
        channels = train.shape[1]
        vectors = train.permute(0, 2, 3, 1).reshape(-1, channels)
        memory = vectors[FastKCenterGreedy(vectors, sampling_ratio=0.01, progress_every_s=0).select_coreset_idxs()]
        queries = test.permute(0, 2, 3, 1).reshape(test.shape[0], -1, channels)
        scores = []
        for chunk in queries.split(16):
            squared = (memory.pow(2).sum(-1) - 2 * chunk @ memory.T).min(-1).values + chunk.pow(2).sum(-1)
            distance = squared.clamp(min=0).sqrt().reshape(len(chunk), 1, *test.shape[-2:])
            distance = F.interpolate(distance, size=model.model.grid[0] * 16, mode="bilinear")
            scores.append(F.avg_pool2d(distance, 16, stride=1).amax(dim=(1, 2, 3)))
        auroc = 100 * roc_auc_score(labels.numpy(), torch.cat(scores).numpy())
        seconds = time.perf_counter() - start
        print(f"stages {stages} C {channels} memory {len(memory)} {seconds:.0f}s image AUROC {auroc:.1f}", flush=True)


if __name__ == "__main__":
    main()
