# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Probe: how well does the retrieval similarity tell an unknown product from a known one?

Retrieval depends only on the prompt pool's keys (class means of the frozen backbone's global coding for PNPT,
prompt images' pooled features for OneNIP), not on the trained network, so leaving a class out of a trained
model's pool (``remove_class``) is what a model trained without it would retrieve. For every class C: C's test
images are "unknown", the other classes' test images "known"; each image's similarity to the retrieved key is
compared with a per-class bound fitted on the known classes' normal VALIDATION images (the held-out 10 % of
their training images), for several bound rules (the last: halfway between a class's least similar normal
validation image and the most similar validation image of another known class). Reports the share of unknown
images flagged and of known images wrongly flagged (targets of the new-class issue: >= 95 % and < 1 %).

Usage:
    python benchmarks/unknown_class_probe.py --ckpt_path <Pnpt or OneNip checkpoint> [--root DIR] \
        [--output benchmarks/results/unknown_class_probe]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from invocation import command_line, data_root
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt import Pnpt
from anomalib_pnpt.class_commands import load_checkpoint_model
from anomalib_pnpt.data import MultiClassMVTecAD


@torch.no_grad()
def keys_of(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, list[str]]:
    """Retrieval keys of every image of a loader, and the images' classes."""
    keys, classes = [], []
    for batch in loader:
        features = model.model.extract_features(model.pre_processor(batch.image))
        net = model.model
        keys.append(net.global_coding(features) if isinstance(model, Pnpt) else net.global_key(features))
        classes += [Path(path).parts[-4] for path in batch.image_path]  # <root>/<class>/<split>/<type>/<file>
    return torch.cat(keys), classes


def main() -> int:
    """Fit bounds on validation normals, flag test images, write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=data_root(__file__) / "industrial")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/unknown_class_probe"))
    args = parser.parse_args()
    model, _ = load_checkpoint_model(args.ckpt_path)
    datamodule = MultiClassMVTecAD(root=args.root, categories=model.prompt_categories, eval_batch_size=16)
    datamodule.setup()
    val_keys, val_classes = keys_of(model, datamodule.val_dataloader())
    test_keys, test_classes = keys_of(model, datamodule.test_dataloader())
    pool_keys = model.model.prompt_pool.keys
    slots = pool_keys.shape[0] // len(model.prompt_categories)
    slot_class = [model.prompt_categories[i // slots] for i in range(pool_keys.shape[0])]

    def best(keys: torch.Tensor, allowed: list[str]) -> tuple[torch.Tensor, list[str]]:
        mask = torch.tensor([c in allowed for c in slot_class])
        similarity = F.normalize(keys, dim=-1) @ F.normalize(pool_keys[mask], dim=-1).T
        values, index = similarity.max(dim=1)
        kept = [c for c, m in zip(slot_class, mask.tolist(), strict=True) if m]
        return values, [kept[i] for i in index.tolist()]

    rules = {
        "min": lambda s: s.min(),
        "min - 1 x range": lambda s: s.min() - (s.max() - s.min()),
        "min - 2 x range": lambda s: s.min() - 2 * (s.max() - s.min()),
        "mean - 4 std": lambda s: s.mean() - 4 * s.std(),
        "mean - 6 std": lambda s: s.mean() - 6 * s.std(),
    }
    rows = []
    for left_out in model.prompt_categories:
        known = [c for c in model.prompt_categories if c != left_out]
        val_mask = [c in known for c in val_classes]
        val_similarity, val_retrieved = best(val_keys[torch.tensor(val_mask)], known)
        val_true = [c for c, m in zip(val_classes, val_mask, strict=True) if m]
        test_similarity, test_retrieved = best(test_keys, known)
        # Similarity of every known validation image to every known class's (best) key.
        to_class = {c: best(val_keys[torch.tensor(val_mask)], [c])[0] for c in known}
        for rule, bound_of in [*rules.items(), ("midpoint to other classes", None)]:
            bounds = {}
            for c in known:
                own = torch.tensor([r == c == t for r, t in zip(val_retrieved, val_true, strict=True)])
                if bound_of is not None:
                    bounds[c] = float(bound_of(val_similarity[own])) if own.sum() > 1 else float("nan")
                    continue
                # Halfway between the class's own least similar normal image and the most similar image of
                # another known class: known classes only, no test image.
                others = torch.tensor([t != c for t in val_true])
                bounds[c] = 0.5 * (float(to_class[c][~others].min()) + float(to_class[c][others].max()))
            flagged = torch.tensor(
                [s < bounds[r] for s, r in zip(test_similarity.tolist(), test_retrieved, strict=True)]
            )
            unknown = torch.tensor([c == left_out for c in test_classes])
            rows.append(
                {
                    "left out": left_out,
                    "rule": rule,
                    "unknown flagged %": 100 * float(flagged[unknown].float().mean()),
                    "known wrongly flagged %": 100 * float(flagged[~unknown].float().mean()),
                    "unknown images": int(unknown.sum()),
                    "known images": int((~unknown).sum()),
                    "bounds": ", ".join(f"{c} {b:.4f}" for c, b in bounds.items()),
                    "unknown similarity (median)": float(test_similarity[unknown].median()),
                    "known similarity (min)": float(test_similarity[~unknown].min()),
                }
            )
    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "results.csv", index=False)
    lines = [
        "# Unknown-class detection by retrieval similarity (probe)",
        "",
        f"Command: `{command_line()}`  ",
        f"Checkpoint: `{args.ckpt_path}`; data `{args.root}`; bounds fitted on validation normals only.",
        "",
        table.drop(columns=["bounds"]).round(4).to_markdown(index=False),
    ]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
