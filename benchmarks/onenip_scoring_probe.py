# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's scoring choices, measured on one trained checkpoint without retraining.

The accuracy issue's hypotheses about OneNIP's scoring: the image score (the maximum after a 16 x 16
average pooling) dilutes thin defects such as magnetic_tile's cracks, and one refiner scale ``s`` (the
largest normal ``S_rec``) serves every class. This script computes, once per test image, the
reconstruction error ``S_rec`` and the refiner's map at the input size, and then scores every variant from
them: pooling side 16 / 8 / 4 / 1 (plain maximum), the refiner weight ``alpha`` 0 / 0.5 / 1, and a global
against a per-class refiner scale (each class's largest ``S_rec`` over its first training images). The
scale is always calibrated on TRAINING images. The test images only measure. This is an ablation, so a
variant that wins here changes a default only with that caveat written beside it.

Usage:
    python benchmarks/onenip_scoring_probe.py --checkpoint <OneNip model.ckpt> \
        [--output benchmarks/results/onenip_scoring_probe]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from invocation import command_line, data_root
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt import OneNip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pnpt_cached_probe import CLASSES, load_image, load_mask

CALIBRATION_IMAGES = 64  # per class, from the training split
POOLS = (16, 8, 4, 1)
ALPHAS = (0.0, 0.5, 1.0)


@torch.no_grad()
def maps_of(model: OneNip, files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """``S_rec`` and the refiner's probability map ``(N, 1, H, W)`` of image files, batch by batch."""
    network = model.model
    reconstruction_errors, refined_maps = [], []
    for start in range(0, len(files), 16):
        batch = torch.stack([load_image(f) for f in files[start : start + 16]])
        images = model.pre_processor.transform(batch)
        features = network.extract_features(images)
        reconstruction = network.reconstruct(features, network.inference_prompts(features)[1])
        size = images.shape[-2:]
        reconstruction_errors.append(network.anomaly_map_generator.reconstruction_error(features, reconstruction, size))
        refined_maps.append(network.refine(features, reconstruction, size))
    return torch.cat(reconstruction_errors), torch.cat(refined_maps)


def image_score(anomaly_map: torch.Tensor, pool: int) -> torch.Tensor:
    """OneNIP's image score: the maximum after a ``pool`` x ``pool`` average pooling (stride 1)."""
    pooled = F.avg_pool2d(anomaly_map, pool, stride=1) if pool > 1 else anomaly_map
    return pooled.flatten(1).amax(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/onenip_scoring_probe"))
    args = parser.parse_args()
    root = args.root or data_root(__file__) / "industrial"
    torch.set_grad_enabled(False)
    model = OneNip.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    stored_scale = float(model.model.anomaly_map_generator.refiner_scale)
    start = time.perf_counter()
    data, class_scale = {}, {}
    for category in CLASSES:
        train = sorted((root / category / "train" / "good").iterdir())
        calibration = train[:: max(1, len(train) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]
        class_scale[category] = float(maps_of(model, calibration)[0].amax())
        files = sorted(p for p in (root / category / "test").rglob("*") if p.is_file())
        reconstruction_error, refined = maps_of(model, files)
        size = reconstruction_error.shape[-1]
        data[category] = {
            "s_rec": reconstruction_error,
            "refined": refined,
            "labels": np.array([f.parent.name != "good" for f in files]),
            "masks": torch.stack([load_mask(root, category, f, size)[0] for f in files]),
        }
        print(f"{category}: {len(files)} test images, class scale {class_scale[category]:.3f}", flush=True)
    global_scale = max(class_scale.values())
    rows = []
    for alpha in ALPHAS:
        for scale_rule in ("global", "per-class"):
            if alpha in (0.0, 1.0) and scale_rule == "per-class":
                continue  # the scale only weighs the two maps against each other
            for pool in POOLS:
                row = {"alpha": alpha, "refiner scale": scale_rule, "pool": pool}
                for category in CLASSES:
                    d = data[category]
                    scale = global_scale if scale_rule == "global" else class_scale[category]
                    fused = (1 - alpha) * d["s_rec"] + alpha * scale * d["refined"]
                    row[f"{category} image"] = 100 * roc_auc_score(d["labels"], image_score(fused, pool).numpy())
                    if pool == POOLS[0]:  # pixel metrics do not depend on the image score's pooling
                        pixels, truth = fused[..., ::4, ::4].flatten().numpy(), d["masks"][..., ::4, ::4].flatten()
                        row[f"{category} pixel"] = 100 * roc_auc_score(truth.numpy(), pixels)
                        row[f"{category} pixel AP"] = 100 * average_precision_score(truth.numpy(), pixels)
                rows.append(row)
    table = pd.DataFrame(rows)
    for kind in ("image", "pixel", "pixel AP"):
        table[f"mean {kind}"] = table[[f"{c} {kind}" for c in CLASSES]].mean(axis=1)
    columns = ["alpha", "refiner scale", "pool", "mean image", "magnetic_tile image", "mean pixel", "mean pixel AP"]
    columns += [f"{c} image" for c in CLASSES if c != "magnetic_tile"]
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "scores.csv", index=False)
    lines = [
        "# OneNIP scoring variants on one trained checkpoint",
        "",
        f"Command: `{command_line()}`",
        f"Checkpoint: `{args.checkpoint}`. {time.perf_counter() - start:.0f} s.",
        f"Refiner scale stored in the checkpoint {stored_scale:.3f}; recomputed here per class on "
        f"{CALIBRATION_IMAGES} training images: "
        + ", ".join(f"{c} {s:.3f}" for c, s in class_scale.items())
        + f" (global = their maximum, {global_scale:.3f}).",
        "Pixel metrics depend only on alpha and the scale (empty in rows that differ only in pooling).",
        "",
        table[columns].round(1).to_markdown(index=False),
    ]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
