# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Where magnetic_tile's defect signal lies in Lite2's levels, and how close a linear HPE bottleneck can get.

Usage:
    python benchmarks/pnpt_signal_probe.py [--cache /tmp/pnpt_probe_features.pt] [--category magnetic_tile] \
        [--output benchmarks/results/pnpt_probe/signal.md]

No network is trained. On the cached features of ``benchmarks/pnpt_cached_probe.py`` (extracted there when the
cache is missing), for one class:

- per level, the map of the cosine distance to the class-mean feature map (PNPT's prior, Eq. 8 without a
  reconstruction) against the distance to the nearest of 40 000 random training patches (3x3-averaged, a
  PatchCore-like local model of normality): image and pixel AUROC, same blur and max as PNPT's map;
- HPE's linear bottleneck: the per-level ``1 - cos`` between the test patch vectors and their best rank-k
  linear reconstruction (principal components of 60 000 training patch vectors of all classes; joint over the
  concatenated scales as ``scale_projection="joint"``, or per scale as ``"per_scale"``), next to the class
  mean's. If a perfect rank-128 network reconstructs normal patches far better than the class mean, the
  bottleneck is not what keeps PNPT at its prior.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
from invocation import command_line
from pnpt_cached_probe import CLASSES, SIZE, load_or_extract

from anomalib_pnpt.gaussian_blur import SeparableGaussianBlur
from anomalib_pnpt.models.pnpt.components import HierarchicalPatchEmbedding


def auroc_row(name: str, maps: torch.Tensor, data: dict) -> dict:
    """Image (max of the blurred map) and pixel AUROC of per-level maps ``(N, 1, h, w)``."""
    full = SeparableGaussianBlur(4.0)(F.interpolate(maps, size=(SIZE, SIZE), mode="bilinear"))
    return {
        "map": name,
        "image_AUROC": 100 * roc_auc_score(data["labels"].numpy(), full.amax(dim=(1, 2, 3)).numpy()),
        "pixel_AUROC": 100
        * roc_auc_score(data["masks"][..., ::4, ::4].flatten().numpy(), full[..., ::4, ::4].flatten().numpy()),
    }


def embedding_for(levels: list[torch.Tensor]) -> HierarchicalPatchEmbedding:
    """An HPE for these levels (patch sizes 4/2/1 for Lite2 levels 1-3); only its patch vectors are used."""
    reductions = [SIZE // level.shape[-1] for level in levels]
    return HierarchicalPatchEmbedding([level.shape[1] for level in levels], reductions, hidden_dim=8)


def patch_vectors(hpe: HierarchicalPatchEmbedding, levels: list[torch.Tensor]) -> torch.Tensor:
    """HPE's patch vectors ``(N * L, sum c_i p_i^2)`` (pixel-unshuffled levels, concatenated), one row per token."""
    vectors = hpe.patch_vectors(levels)
    return vectors.reshape(-1, vectors.shape[-1])


def main() -> None:
    """Compute both tables and write them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pnpt_probe_features.pt"))
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pnpt_probe/signal.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = load_or_extract(args.cache)
    train, test = cache[args.category, "train"]["features"], cache[args.category, "test"]
    generator = torch.Generator().manual_seed(0)

    rows = []
    for index, (normal, query) in enumerate(zip(train, test["features"], strict=True)):
        mean = normal.mean(dim=0, keepdim=True)
        rows.append(auroc_row(f"level {index + 1}: class mean", 1 - F.cosine_similarity(query, mean)[:, None], test))
        pooled_normal, pooled_query = F.avg_pool2d(normal, 3, 1, 1), F.avg_pool2d(query, 3, 1, 1)
        memory = pooled_normal.permute(0, 2, 3, 1).reshape(-1, normal.shape[1])
        memory = memory[torch.randperm(len(memory), generator=generator)[:40000]]
        flat = pooled_query.permute(0, 2, 3, 1).reshape(-1, normal.shape[1])
        nearest = torch.cat([torch.cdist(flat[i : i + 8192], memory).amin(1) for i in range(0, len(flat), 8192)])
        rows.append(
            auroc_row(
                f"level {index + 1}: nearest of 40k patches",
                nearest.view(len(query), 1, *query.shape[-2:]),
                test,
            )
        )

    hpe = embedding_for(train)
    dims = hpe.patch_dims
    everything = torch.cat([patch_vectors(hpe, cache[c, "train"]["features"]) for c in CLASSES])
    sample = everything[torch.randperm(len(everything), generator=generator)[:60000]]
    queries = patch_vectors(hpe, test["features"])[::7]

    def level_distances(reconstruction: torch.Tensor) -> list[float]:
        pairs = zip(torch.split(queries, dims, 1), torch.split(reconstruction, dims, 1), strict=True)
        return [float((1 - F.cosine_similarity(q, r, dim=1)).mean()) for q, r in pairs]

    def rank_k(rows_: torch.Tensor, query: torch.Tensor, k: int) -> torch.Tensor:
        centre = rows_.mean(0)
        basis = torch.linalg.svd(rows_ - centre, full_matrices=False)[2][:k]
        return (query - centre) @ basis.T @ basis + centre

    bottleneck = []
    for k in (64, 128, 256):
        bottleneck.append(
            {
                "reconstruction": f"joint, rank {k}",
                **dict(
                    zip(("level 1", "level 2", "level 3"), level_distances(rank_k(sample, queries, k)), strict=True)
                ),
            }
        )
    for ks in ((43, 43, 42), (16, 32, 80)):
        parts = [
            rank_k(s, q, k)
            for s, q, k in zip(torch.split(sample, dims, 1), torch.split(queries, dims, 1), ks, strict=True)
        ]
        bottleneck.append(
            {
                "reconstruction": f"per scale, ranks {ks}",
                **dict(zip(("level 1", "level 2", "level 3"), level_distances(torch.cat(parts, 1)), strict=True)),
            }
        )
    class_mean = patch_vectors(hpe, [level.mean(0, keepdim=True) for level in train])
    mean_rows = class_mean.repeat(len(test["labels"]), 1)[::7]
    bottleneck.append(
        {
            "reconstruction": "the class mean (PNPT's prior)",
            **dict(zip(("level 1", "level 2", "level 3"), level_distances(mean_rows), strict=True)),
        }
    )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        f"# Signal and bottleneck on {args.category}\n\nCommand: `{command_line(sys.argv)}`\n\n"
        "## Per-level maps, no training (image / pixel AUROC, percent)\n\n"
        f"{pd.DataFrame(rows).round(1).to_markdown(index=False)}\n\n"
        "## Mean per-level 1 - cos between test patch vectors and a linear reconstruction\n\n"
        f"{pd.DataFrame(bottleneck).round(3).to_markdown(index=False)}\n"
    )
    print(args.output.read_text())


if __name__ == "__main__":
    main()
