# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A memory-fused model's maps and image scores taken apart on one checkpoint (OneNIP or PNPT), no retraining.

With ``memory_weight`` ``w`` the map is ``(1 - w) S_net + w s S_mem / m_c`` (``anomalib_pnpt/memory_fusion.py``;
PNPT smooths ``S_mem`` with Eq. 8's Gaussian first). This script computes, once per test image, the network's map
``S_net`` and the memory's scaled distances, and scores each rule from them:

- ``fused map, pool P`` (OneNIP): the maximum of the fused map after a P x P average pooling (16: as trained);
- ``fused map`` (PNPT): its maximum, as trained; ``fused map, memory_weight w'``: the same map with another weight;
- ``fused scores``: ``(1 - w) score(S_net) + w s max(S_mem) / m_c``: each map scored its own way (the network's
  rule; PatchCore's largest patch distance), then fused as the maps are;
- ``memory alone`` and ``network alone``;
- PNPT only, ``prior + memory``: the class-mean prior's own map (Eq. 8 with ``F_fuse* = F_prior``, no transformer)
  fused with the memory in the same way, on the prior map's own normal scale (its largest value on the same
  normal training images as ``s``). Does the transformer add to the memory more than its prior does?
- ``fused map, per-class network scale``: ``S_net`` divided by its own class's largest normal training value
  ``s_c`` (times ``s``) before the fusion, as ``S_mem`` is by ``m_c``: each class's two maps on their own range.

Image AUROC per class (exact) and pixel AUROC per class (on maps and masks average-pooled 4 x 4, an approximation
of the harness's full-resolution figure). The memories are built from the training images
(``memory_all_images``); ``s`` and ``m_c`` come from training images. The test images only measure: an ablation,
not a tuning.

Usage:
    python benchmarks/memory_image_score_probe.py --checkpoint <OneNip or Pnpt model.ckpt with memory_weight > 0> \
        --output benchmarks/results/unified_memory_cpu/score_probe_<model> [--root DIR] [--rebuild_memory]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from invocation import command_line, data_root
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.class_commands import load_checkpoint_model
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.prompt_pool import pool_dataloader, preprocessed_batches

PIXEL_POOL = 4  # maps and masks are average-pooled this much for the pixel AUROC (memory and time)


def is_pnpt(model: Any) -> bool:
    """Whether the model is PNPT (else OneNIP)."""
    return hasattr(model.model, "retrieve_prior")


@torch.no_grad()
def maps_of(model: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The maps of pre-processed images, each ``(B, 1, h, w)``.

    ``network`` (``S_net``), ``memory`` (``S_mem`` at its patch grid, times ``s / m_c``) and, for PNPT, ``prior``
    (the prior's own Eq. 8 map).
    """
    net = model.model
    generator = net.anomaly_map_generator
    size = images.shape[-2:]
    if is_pnpt(model):
        features = net.extract_features(images)
        class_ids, prior, _ = net.retrieve_prior(features)
        network = net.network_map(images)
        found = {"network": network, "prior": generator(features, None, prior, image_size=size)[0]}
        memory_features, scale = net.memory_features(images, features), generator.normal_scale
    else:
        maps = net.feature_extractor(images)
        features = net.extract_features(images, maps)
        class_ids, prompts, _ = net.inference_prompts(features)
        reconstruction = net.reconstruct(features, prompts)
        refined = net.refine(features, reconstruction, size) if net.refiner is not None else None
        found = {"network": generator(features, reconstruction, refined, size)[0]}
        memory_features, scale = net.memory_features(images, maps), generator.refiner_scale
    distances = net.class_memory.distances(memory_features, class_ids)
    found["memory"] = (scale / net.class_memory.normal_scales[class_ids]).view(-1, 1, 1, 1) * distances
    found["class_ids"] = class_ids
    return found


def memory_map(model: Any, memory: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The memory's patch distances as the model fuses them: upsampled (for PNPT, smoothed by Eq. 8's Gaussian)."""
    upsampled = F.interpolate(memory, size=tuple(size), mode="bilinear", align_corners=False)
    return model.model.anomaly_map_generator.blur(upsampled) if is_pnpt(model) else upsampled


def pooled_max(anomaly_map: torch.Tensor, pool: int) -> torch.Tensor:
    """The maximum after a ``pool`` x ``pool`` average pooling (1: the plain maximum), ``(N,)``."""
    pooled = F.avg_pool2d(anomaly_map, pool, stride=1) if pool > 1 else anomaly_map
    return pooled.flatten(1).amax(dim=1)


@torch.no_grad()
def normal_maxima(model: Any, datamodule: MultiClassMVTecAD) -> dict[str, torch.Tensor]:
    """Each map's largest value per class ``(C,)`` on the training images the model's ``s`` is measured on.

    ``network``, and for PNPT ``prior``.
    """
    images = pool_dataloader(datamodule.train_dataloader(), limit=model.calibration_images)
    maxima: dict[str, torch.Tensor] = {}
    for batch, class_ids, _ in preprocessed_batches(images, model):
        found = maps_of(model, batch)
        for name in ("network", "prior"):
            if name in found:
                largest = maxima.setdefault(name, torch.zeros(len(datamodule.categories)))
                per_image = found[name].flatten(1).amax(dim=1)
                largest.scatter_reduce_(0, class_ids, per_image, reduce="amax")
    return maxima


@torch.no_grad()
def evaluate(model: Any, datamodule: MultiClassMVTecAD, rules: dict[str, Any]) -> list[dict[str, Any]]:
    """Image and pixel AUROC per class of every rule ``name -> f(maps) -> (map, score)``."""
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in rules}
    pixels: dict[str, list[torch.Tensor]] = {name: [] for name in rules}
    labels, classes, masks = [], [], []
    for batch in datamodule.test_dataloader():
        images = model.pre_processor.transform(batch.image)
        found = maps_of(model, images)
        for name, rule in rules.items():
            anomaly_map, score = rule(found, images.shape[-2:])
            scores[name].append(score)
            pixels[name].append(F.avg_pool2d(anomaly_map, PIXEL_POOL).flatten(1))
        labels.append(batch.gt_label.long())
        classes.append(batch.category_id.long())
        mask = F.interpolate(
            batch.gt_mask.float().view(len(images), 1, *batch.gt_mask.shape[-2:]), size=images.shape[-2:]
        )
        masks.append((F.avg_pool2d(mask, PIXEL_POOL) >= 0.5).flatten(1))
    label, category, mask = torch.cat(labels), torch.cat(classes), torch.cat(masks)
    rows = []
    for name in rules:
        score, pixel = torch.cat(scores[name]), torch.cat(pixels[name])
        row: dict[str, Any] = {"rule": name}
        for index, class_name in enumerate(datamodule.categories):
            chosen = category == index
            row[f"{class_name} image"] = 100 * roc_auc_score(label[chosen].numpy(), score[chosen].numpy())
            row[f"{class_name} pixel"] = 100 * roc_auc_score(
                mask[chosen].flatten().numpy(), pixel[chosen].flatten().numpy()
            )
        for level in ("image", "pixel"):
            row[f"mean {level}"] = sum(row[f"{c} {level}"] for c in datamodule.categories) / len(datamodule.categories)
        rows.append({key: round(value, 2) if isinstance(value, float) else value for key, value in row.items()})
        print(rows[-1], flush=True)
    return rows


def rules_of(model: Any, maxima: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The scoring rules of the model (module docstring); ``maxima``: :func:`normal_maxima`."""
    weight = model.model.memory_weight
    generator = model.model.anomaly_map_generator
    pool = 1 if is_pnpt(model) else generator.score_pool

    def fused(
        found: dict[str, torch.Tensor], size: torch.Size, side: int = pool, weight: float = weight
    ) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = (1 - weight) * found["network"] + weight * memory_map(model, found["memory"], size)
        return anomaly_map, pooled_max(anomaly_map, side)

    def fused_scores(found: dict[str, torch.Tensor], size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map, _ = fused(found, size)
        memory_score = found["memory"].flatten(1).amax(dim=1)
        return anomaly_map, (1 - weight) * pooled_max(found["network"], pool) + weight * memory_score

    def memory_alone(found: dict[str, torch.Tensor], size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        return memory_map(model, found["memory"], size), found["memory"].flatten(1).amax(dim=1)

    def network_alone(found: dict[str, torch.Tensor], size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        return found["network"], pooled_max(found["network"], pool)

    rules: dict[str, Any] = {f"fused map, pool {pool} (as trained)": fused}
    if not is_pnpt(model):
        for side in (8, 1):
            rules[f"fused map, pool {side}"] = lambda found, size, side=side: fused(found, size, side)
    for other in (0.25, 0.75):
        rules[f"fused map, memory_weight {other}"] = lambda found, size, other=other: fused(found, size, weight=other)
    rules["fused scores (memory's largest patch)"] = fused_scores
    rules["memory alone (largest patch)"] = memory_alone
    rules["network alone"] = network_alone
    network_scale = float(generator.normal_scale if is_pnpt(model) else generator.refiner_scale)

    def per_class_scale(found: dict[str, torch.Tensor], size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        # Both maps on their own class's normal range: S_net * s / s_c, s_c its largest normal value in the class.
        own_scale = network_scale / maxima["network"][found["class_ids"]].view(-1, 1, 1, 1)
        return fused({**found, "network": found["network"] * own_scale}, size)

    rules["fused map, per-class network scale"] = per_class_scale
    if "prior" in maxima:

        def prior_and_memory(found: dict[str, torch.Tensor], size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
            # The prior's map on the network's scale, so that the memory's term weighs as much as in the model.
            prior = found["prior"] * network_scale / float(maxima["prior"].max())
            anomaly_map = (1 - weight) * prior + weight * memory_map(model, found["memory"], size)
            return anomaly_map, pooled_max(anomaly_map, 1)

        rules["prior + memory (no transformer)"] = prior_and_memory
        rules["prior alone (no transformer)"] = lambda found, size: (found["prior"], pooled_max(found["prior"], 1))
    return rules


def fused_model_and_data(checkpoint: Path, root: Path, rebuild_memory: bool) -> tuple[Any, MultiClassMVTecAD]:
    """The checkpoint's model with every class's memory, and the datamodule of its classes (set up).

    Args:
        checkpoint: A OneNip or Pnpt checkpoint with ``memory_weight > 0``.
        root: The dataset root.
        rebuild_memory: Rebuild the memories from all training images even if the checkpoint holds them (it always
            does when it holds none); the validation images stay out of them.
    """
    model, saved = load_checkpoint_model(checkpoint, memory_all_images=True)
    categories = saved.get("prompt_categories") or model.prompt_categories
    datamodule = MultiClassMVTecAD(
        root=root, categories=categories, train_batch_size=16, eval_batch_size=16, num_workers=2
    )
    datamodule.setup()
    if rebuild_memory or model.model.class_memory.patches.numel() == 0:
        model.fill_class_memory(datamodule)
    return model, datamodule


def main() -> None:
    """Score every rule and write ``results.{csv,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--rebuild_memory", action="store_true", help="rebuild the memories of all training images")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    model, datamodule = fused_model_and_data(args.checkpoint, args.root, args.rebuild_memory)
    maxima = normal_maxima(model, datamodule)
    frame = pd.DataFrame(evaluate(model, datamodule, rules_of(model, maxima)))
    print(frame.to_string(index=False), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "results.csv", index=False)
    scales = "; largest normal training values per class: " + ", ".join(
        f"{name} {[round(v, 4) for v in values.tolist()]}" for name, values in maxima.items()
    )
    (args.output / "results.md").write_text(
        f"Command: `{command_line()}`\n\nCheckpoint: `{args.checkpoint}`\n\nAUROC (%), pixel AUROC on {PIXEL_POOL}x"
        f"{PIXEL_POOL}-pooled maps{scales}; {time.perf_counter() - start:.0f} s\n\n{frame.to_markdown(index=False)}\n"
    )


if __name__ == "__main__":
    main()
