# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Short PNPT runs on cached backbone features: the smallest run that can show a hypothesis alive.

Usage:
    python benchmarks/pnpt_cached_probe.py --variant NAME='{"init": "args"}' [--variant ...] [--epochs 2] \
        [--lr 5e-4] [--root DIR] [--cache /tmp/pnpt_probe_features.pt] [--output benchmarks/results/pnpt_probe]

PNPT's backbone is frozen, so the features of every training and test image of the unified three-class data
are computed once (the package's ``BackbonePreProcessor`` and ``FrozenFeatureExtractor``, Lite2 levels 1-3 at
256 px, ~1.2 GB) and kept in ``--cache``. Each variant is then a ``PnptModel`` with the CPU configuration's
arguments (``configs/pnpt_cpu.yaml``) updated by the variant's JSON, its prompt pool built from the cached
training features, trained with AdamW (batch 8, no augmentation, the same seed for every variant), and
evaluated on the cached test features after every epoch: image AUROC and pixel AUROC per class (pixels
subsampled 4x4; raw scores). The per-epoch figures are a learning curve; nothing is selected on them.

The ``prior`` row scores Eq. 8 with the retrieved class-mean prior in place of the reconstruction (no
network): the baseline the transformer must beat. Writes ``results.md`` and ``results.csv`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from invocation import command_line, data_root
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.backbones import FrozenFeatureExtractor
from anomalib_pnpt.models.pnpt.torch_model import PnptModel
from anomalib_pnpt.pre_processing import BackbonePreProcessor

CLASSES = ("bottle", "hazelnut_toy", "magnetic_tile")
CPU_CONFIG = {  # configs/pnpt_cpu.yaml's network
    "backbone": "tf_efficientnet_lite2",
    "layers": [1, 2, 3],
    "hidden_dim": 128,
    "num_semantic_tokens": 20,
    "num_heads": 8,
    "num_layers": 4,
    "ffn_dim": 512,
}
SIZE = 256


def load_image(path: Path) -> torch.Tensor:
    """RGB image as a float tensor ``(3, H, W)`` in [0, 1]."""
    array = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def load_mask(root: Path, category: str, image: Path, size: int = SIZE) -> torch.Tensor:
    """Boolean ground-truth mask ``(1, size, size)`` (all false for good images)."""
    if image.parent.name == "good":
        return torch.zeros(1, size, size, dtype=torch.bool)
    mask_path = root / category / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
    mask = torch.from_numpy(np.array(Image.open(mask_path).convert("L"))).float()[None, None]
    return F.interpolate(mask, size=(size, size), mode="nearest")[0] > 127


@torch.no_grad()
def extract(root: Path) -> dict:
    """Backbone features, labels and masks of every train/test image, per (class, split)."""
    extractor = FrozenFeatureExtractor(CPU_CONFIG["backbone"], CPU_CONFIG["layers"], pretrained=True).eval()
    transform = BackbonePreProcessor(CPU_CONFIG["backbone"], SIZE).transform
    cache = {}
    for category in CLASSES:
        for split in ("train", "test"):
            files = sorted(p for p in (root / category / split).rglob("*") if p.is_file())
            levels: list[list[torch.Tensor]] = [[] for _ in CPU_CONFIG["layers"]]
            for start in range(0, len(files), 16):
                images = torch.stack([transform(load_image(f)[None])[0] for f in files[start : start + 16]])
                for store, level in zip(levels, extractor(images), strict=True):
                    store.append(level)
            cache[category, split] = {
                "features": [torch.cat(level) for level in levels],
                "labels": torch.tensor([f.parent.name != "good" for f in files]),
                "masks": torch.stack([load_mask(root, category, f) for f in files]) if split == "test" else None,
            }
            print(f"features: {category}/{split} ({len(files)} images)", flush=True)
    return cache


def load_or_extract(cache_path: Path, root: Path | None = None) -> dict:
    """The cached features, extracted (from ``root``, default the shared industrial data) and saved if missing."""
    if cache_path.exists():
        return torch.load(cache_path)
    cache = extract(root or data_root(__file__) / "industrial")
    torch.save(cache, cache_path)
    return cache


def evaluate(
    model: PnptModel, cache: dict, prior_only: bool = False, priors: dict[str, list[torch.Tensor]] | None = None
) -> dict[str, tuple[float, float]]:
    """Image and pixel AUROC (percent) per class on the cached test features.

    ``priors`` (per class, per level, one map per test image) replaces the prior the pool retrieves.
    """
    model.eval()
    results = {}
    with torch.no_grad():
        for category in CLASSES:
            data = cache[category, "test"]
            scores, maps = [], []
            for start in range(0, len(data["labels"]), 32):
                features = [level[start : start + 32] for level in data["features"]]
                if priors is None:
                    prior = model.retrieve_prior(features).prompts
                else:
                    prior = [level[start : start + 32] for level in priors[category]]
                if prior_only:  # Eq. 8 with F_fuse* = the retrieved prior (no reconstruction)
                    reconstructions = (None, prior)
                else:
                    reconstructions = model.reconstruct(features, prior if model.use_prior else None)
                anomaly_map, score = model.anomaly_map_generator(features, *reconstructions, image_size=(SIZE, SIZE))
                scores.append(score)
                maps.append(anomaly_map[..., ::4, ::4])
            masks = data["masks"][..., ::4, ::4].flatten().numpy()
            results[category] = (
                100 * roc_auc_score(data["labels"].numpy(), torch.cat(scores).numpy()),
                100 * roc_auc_score(masks, torch.cat(maps).flatten().numpy()),
            )
    model.train()
    return results


def build(cache: dict, init_args: dict) -> tuple[PnptModel, list[torch.Tensor], torch.Tensor]:
    """The model with its prompt pool built from the cached training features."""
    model = PnptModel(**{**CPU_CONFIG, "pre_trained": False, **init_args})
    train = [cache[category, "train"]["features"] for category in CLASSES]
    features = [torch.cat([levels[i] for levels in train]) for i in range(len(train[0]))]
    class_ids = torch.cat([torch.full((len(levels[0]),), i) for i, levels in enumerate(train)])
    pool = model.prompt_pool
    pool.begin(len(CLASSES), model.key_dim(features), [level.shape[1:] for level in features])
    for start in range(0, len(class_ids), 64):
        chunk = [level[start : start + 64] for level in features]
        pool.accumulate(class_ids[start : start + 64], model.global_coding(chunk), chunk)
    pool.finish()
    return model, features, class_ids


@torch.no_grad()
def clean_loss(model: PnptModel, features: list[torch.Tensor], prior_only: bool = False) -> float:
    """Eq. 7 without training noise on 200 fixed training images (``prior_only``: both streams = the prior)."""
    model.eval()
    chosen = torch.randperm(len(features[0]), generator=torch.Generator().manual_seed(1))[:200]
    total = 0.0
    for start in range(0, len(chosen), 25):
        batch = [level[chosen[start : start + 25]] for level in features]
        prior = model.retrieve_prior(batch).prompts
        reconstructions = (prior, prior) if prior_only else model.reconstruct(batch, prior)
        total += float(model.loss(batch, *reconstructions)) * len(batch[0])
    model.train()
    return total / len(chosen)


@torch.no_grad()
def level_breakdown(model: PnptModel, cache: dict, category: str = "magnetic_tile") -> list[dict]:
    """Image/pixel AUROC of each stream's map (and the prior's), per level and summed, for one class."""
    model.eval()
    data = cache[category, "test"]
    distances: dict[tuple[str, int], list[torch.Tensor]] = {}
    for start in range(0, len(data["labels"]), 32):
        features = [level[start : start + 32] for level in data["features"]]
        prior = model.retrieve_prior(features).prompts
        prior_rec, self_rec = model.reconstruct(features, prior)
        weight = model.anomaly_map_generator.fusion_weight
        fused = [weight * a + (1 - weight) * b for a, b in zip(prior_rec, self_rec, strict=True)]
        for stream, maps in (
            ("fused", fused),
            ("prior stream", prior_rec),
            ("self stream", self_rec),
            ("prior", prior),
        ):
            for level, (target, rec) in enumerate(zip(features, maps, strict=True)):
                distance = 1 - F.cosine_similarity(target, rec, dim=1).unsqueeze(1)
                distances.setdefault((stream, level), []).append(distance)
    blur = model.anomaly_map_generator.blur
    masks = data["masks"][..., ::4, ::4].flatten().numpy()
    rows = []
    for stream in ("fused", "prior stream", "self stream", "prior"):
        levels = len(data["features"])
        for name, chosen in [("all", range(levels))] + [(f"level {i + 1}", [i]) for i in range(levels)]:
            maps = [F.interpolate(torch.cat(distances[stream, i]), size=(SIZE, SIZE), mode="bilinear") for i in chosen]
            anomaly_map = blur(sum(maps))
            rows.append(
                {
                    "map": stream,
                    "levels": name,
                    "image_AUROC": 100 * roc_auc_score(data["labels"].numpy(), anomaly_map.amax(dim=(1, 2, 3)).numpy()),
                    "pixel_AUROC": 100 * roc_auc_score(masks, anomaly_map[..., ::4, ::4].flatten().numpy()),
                }
            )
    model.train()
    return rows


def rows_of(name: str, epoch: int, seconds: float, results: dict) -> list[dict]:
    """Result rows (per class and mean) of one evaluation."""
    rows = [
        {
            "variant": name,
            "epoch": epoch,
            "train_s": round(seconds),
            "category": category,
            "image_AUROC": image,
            "pixel_AUROC": pixel,
        }
        for category, (image, pixel) in results.items()
    ]
    rows.append(
        {
            **rows[0],
            "category": "mean",
            "image_AUROC": np.mean([r["image_AUROC"] for r in rows]),
            "pixel_AUROC": np.mean([r["pixel_AUROC"] for r in rows]),
        }
    )
    return rows


def run_variant(
    name: str, init_args: dict, cache: dict, epochs: int, lr: float, seconds: float | None = None
) -> tuple[list[dict], list[dict]]:
    """Train one variant, evaluate it after every epoch, and stop once ``seconds`` have passed (equal wall time)."""
    torch.manual_seed(0)
    model, features, class_ids = build(cache, init_args)
    parameters = [p for n, p in model.named_parameters() if not n.startswith("feature_extractor")]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    rows, start, spent = [], time.perf_counter(), False
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(class_ids))
        for first in range(0, len(order) - 7, 8):
            batch = order[first : first + 8]
            loss = model.training_loss([level[batch] for level in features])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if seconds is not None and time.perf_counter() - start > seconds:
                spent = True
                break
        elapsed = time.perf_counter() - start  # evaluations of earlier epochs included
        loss_now = clean_loss(model, features)
        rows += [{**row, "clean_loss": loss_now} for row in rows_of(name, epoch, elapsed, evaluate(model, cache))]
        print(json.dumps(rows[-1]), flush=True)
        if spent:
            break
    breakdown = [{"variant": name, **row} for row in level_breakdown(model, cache)] if model.use_prior else []
    return rows, breakdown


def main() -> None:
    """Parse arguments, extract or load the features, run the variants, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON init args (repeatable)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seconds", type=float, default=None, help="training time of every variant (equal wall time)")
    parser.add_argument("--root", type=Path, default=None, help="industrial data root")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pnpt_probe_features.pt"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pnpt_probe"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = load_or_extract(args.cache, args.root)
    prior_model, train_features, _ = build(cache, {})
    prior_loss = clean_loss(prior_model, train_features, prior_only=True)
    rows = [{**row, "clean_loss": prior_loss} for row in rows_of("prior", 0, 0.0, evaluate(prior_model, cache, True))]
    breakdowns = []
    for spec in args.variant:
        name, _, init_args = spec.partition("=")
        variant_rows, breakdown = run_variant(
            name, json.loads(init_args or "{}"), cache, args.epochs, args.lr, args.seconds
        )
        rows += variant_rows
        breakdowns += breakdown
    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "results.csv", index=False)
    mean = table[table.category == "mean"].drop(columns="category")
    tile = table[table.category == "magnetic_tile"][["variant", "epoch", "image_AUROC", "pixel_AUROC"]]
    (args.output / "results.md").write_text(
        f"# PNPT probes on cached features\n\nCommand: `{command_line(sys.argv)}`  \n"
        f"lr {args.lr}, batch 8, {args.epochs} epoch(s), budget {args.seconds} s; "
        "raw scores, percent.\n\n## Mean over classes\n\n"
        f"{mean.round(3).to_markdown(index=False)}\n\n## magnetic_tile\n\n{tile.round(1).to_markdown(index=False)}\n\n"
        "## magnetic_tile maps of each stream and level after the last epoch (`prior`: the retrieved class mean)\n\n"
        f"{pd.DataFrame(breakdowns).round(1).to_markdown(index=False) if breakdowns else 'none'}\n"
    )


if __name__ == "__main__":
    main()
