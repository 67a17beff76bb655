# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Is a class-conditional nearest-patch prior a better prior stream for PNPT than the class-mean map?

Usage:
    python benchmarks/pnpt_patch_prior_probe.py [--memory 40000] [--epochs 2] [--cache /tmp/pnpt_probe_features.pt] \
        [--output benchmarks/results/pnpt_probe/patch_prior.md]

On the cached features of ``benchmarks/pnpt_cached_probe.py`` (unified three classes, Lite2 levels 1-3, 256 px):

- ``F_prior`` per level is, at every position, the class's training patch (of a random memory of ``--memory``
  patches per class and level) with the highest cosine similarity to the input's own patch there. For a training
  image its own patches are excluded (else the prior is the input). The class is the true one, as the pool's
  retrieval is ~100 % correct on these classes.
- ``prior`` rows: Eq. 8 with the prior in place of the reconstruction (no network), next to the class-mean prior.
- ``PNPT`` rows: the CPU network (``configs/pnpt_cpu.yaml``) trained on these priors for ``--epochs`` (AdamW,
  lr 5e-4, batch 8, same seed as the cached probe), evaluated after every epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
from invocation import command_line
from pnpt_cached_probe import CLASSES, CPU_CONFIG, evaluate, load_or_extract, rows_of

from anomalib_pnpt.models.pnpt.torch_model import PnptModel


@torch.no_grad()
def nearest_patch_prior(
    queries: torch.Tensor, memory: torch.Tensor, owners: torch.Tensor | None, query_owner: torch.Tensor | None
) -> torch.Tensor:
    """Per position, the memory patch most cosine-similar to the query's patch.

    Args:
        queries: ``(N, c, h, w)`` features.
        memory: ``(M, c)`` patch vectors of the class.
        owners: ``(M,)`` training-image index of each memory row (``None``: no exclusion).
        query_owner: ``(N,)`` training-image index of each query (its own rows are excluded).
    """
    unit_memory = F.normalize(memory, dim=1)
    prior = torch.empty_like(queries)
    for index in range(len(queries)):
        patches = queries[index].flatten(1).T  # (h*w, c)
        similarity = F.normalize(patches, dim=1) @ unit_memory.T
        if owners is not None:
            similarity[:, owners == query_owner[index]] = -2.0
        prior[index] = memory[similarity.argmax(dim=1)].T.reshape(queries.shape[1:])
    return prior


def memories(cache: dict, size: int, seed: int = 0) -> dict:
    """Per class and level: ``(memory (M, c), owner image index (M,))`` sampled from the training maps."""
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for category in CLASSES:
        for level, maps in enumerate(cache[category, "train"]["features"]):
            rows = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
            owners = torch.arange(len(maps)).repeat_interleave(maps.shape[-2] * maps.shape[-1])
            chosen = torch.randperm(len(rows), generator=generator)[:size]
            result[category, level] = (rows[chosen].clone(), owners[chosen])
    return result


def priors(cache: dict, memory: dict, split: str) -> dict:
    """Nearest-patch priors of every image of a split, per class (training images exclude their own patches)."""
    result = {}
    for category in CLASSES:
        features = cache[category, split]["features"]
        levels = []
        for level, maps in enumerate(features):
            rows, owners = memory[category, level]
            if split == "train":
                levels.append(nearest_patch_prior(maps, rows, owners, torch.arange(len(maps))))
            else:
                levels.append(nearest_patch_prior(maps, rows, None, None))
        result[category] = levels
        print(f"priors: {category}/{split}", flush=True)
    return result


def main() -> None:
    """Build the memories and priors, score the prior alone, train PNPT on it, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, default=40000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variant", default="{}", help="JSON init args of the network on top of the CPU config")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pnpt_probe_features.pt"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pnpt_probe/patch_prior.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = load_or_extract(args.cache)
    start = time.perf_counter()
    memory = memories(cache, args.memory)
    train_priors, test_priors = priors(cache, memory, "train"), priors(cache, memory, "test")
    prior_seconds = time.perf_counter() - start
    torch.manual_seed(0)
    model = PnptModel(**{**CPU_CONFIG, "pre_trained": False, **json.loads(args.variant)})
    rows = rows_of(
        "nearest-patch prior alone", 0, prior_seconds, evaluate(model, cache, prior_only=True, priors=test_priors)
    )
    print(rows[-1], flush=True)
    features = [torch.cat([cache[c, "train"]["features"][i] for c in CLASSES]) for i in range(3)]
    prior = [torch.cat([train_priors[c][i] for c in CLASSES]) for i in range(3)]
    parameters = [p for n, p in model.named_parameters() if not n.startswith("feature_extractor")]
    optimizer = torch.optim.AdamW(parameters, lr=5e-4, weight_decay=1e-4)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(features[0]))
        for first in range(0, len(order) - 7, 8):
            batch = order[first : first + 8]
            chosen = [level[batch] for level in features]
            loss = model.loss(chosen, *model.reconstruct(chosen, [level[batch] for level in prior]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rows += rows_of(
            "PNPT on the nearest-patch prior",
            epoch,
            time.perf_counter() - start,
            evaluate(model, cache, priors=test_priors),
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        "# PNPT with a class-conditional nearest-patch prior (cached features)\n\n"
        f"Command: `{command_line()}`  \nMemory {args.memory} patches per class and level; raw scores.\n\n"
        + table.to_markdown(index=False, floatfmt=".1f")
        + "\n"
    )


if __name__ == "__main__":
    main()
