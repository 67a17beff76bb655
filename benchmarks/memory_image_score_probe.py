# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""How a memory-fused OneNIP turns its map into an image score, measured on one checkpoint without retraining.

OneNIP scores an image by the maximum of its map after a 16 x 16 average pooling; with ``memory_weight`` ``w`` that
map is ``(1 - w) S_net + w s S_mem / m_c`` (``anomalib_pnpt/memory_fusion.py``). PatchCore scores an image by its
largest patch distance, unpooled. This script computes, once per test image, the network's map ``S_net`` and the
memory's patch distances, and then scores each rule from them (image AUROC per class and their mean):

- ``fused map, pool P``: the maximum of the fused map after a P x P average pooling (16: OneNIP's, as trained);
- ``fused scores``: ``(1 - w) score(S_net) + w s max(S_mem) / m_c``: each map scored its own way (OneNIP's pooled
  maximum; PatchCore's largest patch distance), then fused as the maps are;
- ``memory alone`` (largest patch distance, PatchCore's rule) and ``network alone`` (pooled maximum).

The memories are built from the training images (``memory_all_images``); ``s`` and ``m_c`` come from the
checkpoint's calibration on training images. The test images only measure: an ablation, not a tuning.

Usage:
    python benchmarks/memory_image_score_probe.py --checkpoint <OneNip model.ckpt with memory_weight > 0> \
        [--root DIR] [--output benchmarks/results/unified_memory_cpu/image_score_probe]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from invocation import command_line, data_root
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.class_commands import load_checkpoint_model
from anomalib_pnpt.data import MultiClassMVTecAD


@torch.no_grad()
def collect(model: torch.nn.Module, datamodule: MultiClassMVTecAD) -> dict[str, torch.Tensor]:
    """Per test image: the network's map, the memory's scaled patch distances, label and class."""
    net = model.model
    generator = net.anomaly_map_generator
    out: dict[str, list[torch.Tensor]] = {"network": [], "memory": [], "label": [], "class": []}
    for batch in datamodule.test_dataloader():
        images = model.pre_processor.transform(batch.image)
        maps = net.feature_extractor(images)
        features = net.extract_features(images, maps)
        class_ids, prompts, _ = net.inference_prompts(features)
        reconstruction = net.reconstruct(features, prompts)
        refined = net.refine(features, reconstruction, images.shape[-2:]) if net.refiner is not None else None
        network_map, _ = generator(features, reconstruction, refined, images.shape[-2:])
        distances = net.class_memory.distances(net.memory_features(images, maps), class_ids)
        scale = generator.refiner_scale / net.class_memory.normal_scales[class_ids]  # s / m_c
        out["network"].append(network_map)
        out["memory"].append(scale.view(-1, 1, 1, 1) * distances)
        out["label"].append(batch.gt_label.long())
        out["class"].append(batch.category_id.long())
    return {name: torch.cat(values) for name, values in out.items()}


def pooled_max(anomaly_map: torch.Tensor, pool: int) -> torch.Tensor:
    """The maximum after a ``pool`` x ``pool`` average pooling (1: the plain maximum), ``(N,)``."""
    pooled = F.avg_pool2d(anomaly_map, pool, stride=1) if pool > 1 else anomaly_map
    return pooled.flatten(1).amax(dim=1)


def rules(data: dict[str, torch.Tensor], weight: float, pool: int) -> dict[str, torch.Tensor]:
    """Each rule's image scores ``(N,)``."""
    size = data["network"].shape[-2:]
    memory_map = F.interpolate(data["memory"], size=tuple(size), mode="bilinear", align_corners=False)
    fused = (1 - weight) * data["network"] + weight * memory_map
    network_score = pooled_max(data["network"], pool)
    memory_score = data["memory"].flatten(1).amax(dim=1)
    scored = {f"fused map, pool {side}": pooled_max(fused, side) for side in (pool, 8, 4, 1)}
    scored["fused scores (network pooled, memory's largest patch)"] = (
        1 - weight
    ) * network_score + weight * memory_score
    scored["memory alone (largest patch)"] = memory_score
    scored["network alone (pooled)"] = network_score
    return scored


def main() -> None:
    """Score every rule and write ``results.{csv,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/unified_memory_cpu/image_score_probe"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    model, checkpoint = load_checkpoint_model(args.checkpoint, memory_all_images=True)
    categories = checkpoint.get("prompt_categories") or model.prompt_categories
    datamodule = MultiClassMVTecAD(
        root=args.root, categories=categories, train_batch_size=16, eval_batch_size=16, num_workers=2
    )
    datamodule.setup()
    model.fill_class_memory(datamodule)
    data = collect(model, datamodule)
    rows = []
    for rule, scores in rules(data, model.model.memory_weight, model.model.anomaly_map_generator.score_pool).items():
        row = {"rule": rule}
        for index, category in enumerate(categories):
            chosen = data["class"] == index
            row[category] = round(100 * roc_auc_score(data["label"][chosen].numpy(), scores[chosen].numpy()), 2)
        row["mean"] = round(sum(row[c] for c in categories) / len(categories), 2)
        rows.append(row)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "results.csv", index=False)
    (args.output / "results.md").write_text(
        f"Command: `{command_line()}`\n\nCheckpoint: `{args.checkpoint}`\n\nImage AUROC (%), "
        f"{time.perf_counter() - start:.0f} s\n\n{frame.to_markdown(index=False)}\n"
    )


if __name__ == "__main__":
    main()
