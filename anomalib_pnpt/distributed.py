# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Per-sample results of every rank, each image once, for what is computed over a whole evaluation set.

Under distributed validation or testing each rank sees its share of the images, and Lightning's
``DistributedSampler`` repeats up to ``world_size - 1`` images so that the ranks get equal shares. Anything
computed over the whole set -- per-class calibration statistics, per-class AUROC/PRO -- must therefore gather
every rank's samples and drop the repeats, which are recognised by image path (the retrieval-accuracy metric does
the same through torchmetrics' own gathering, :mod:`anomalib_pnpt.evaluation.retrieval_accuracy`).

Example:
    >>> import torch
    >>> columns = {"score": torch.tensor([0.5, 0.25])}
    >>> merged, paths = gather_samples(None, columns, ["a.png", "b.png"])  # one process: unchanged
    >>> merged["score"].tolist(), paths
    ([0.5, 0.25], ['a.png', 'b.png'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import distributed as dist

# A per-sample column: a tensor whose first dimension is the sample, a list with one item per sample, or None.
Column = torch.Tensor | list[Any] | None


def is_distributed(trainer: Trainer | None) -> bool:
    """Whether ``trainer`` runs more than one process in an initialised process group."""
    return trainer is not None and trainer.world_size > 1 and dist.is_available() and dist.is_initialized()


def first_occurrences(paths: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of every path, in order."""
    first: dict[str, int] = {}
    for index, path in enumerate(paths):
        first.setdefault(path, index)
    return sorted(first.values())


def _select(column: Column, indices: list[int]) -> Column:
    if column is None:
        return None
    if isinstance(column, torch.Tensor):
        return column[torch.tensor(indices, dtype=torch.long)]
    return [column[index] for index in indices]


def _concatenate(parts: list[Column]) -> Column:
    if any(part is None for part in parts):
        return None  # a rank without this column (e.g. no masks): the column cannot be aligned
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)  # type: ignore[arg-type]
    return [item for part in parts for item in part]  # type: ignore[union-attr]


def gather_samples(
    trainer: Trainer | None,
    columns: dict[str, Column],
    paths: Sequence[str] | None,
) -> tuple[dict[str, Column], list[str] | None]:
    """All-gather per-sample columns from every rank and keep each image once.

    Args:
        trainer: The running trainer; with one process (or ``None``) the columns come back unchanged.
        columns: Per-sample data of this rank (CPU tensors, lists or ``None``), all of the same length.
        paths: This rank's image paths, one per sample, or ``None`` when unknown (then nothing can be
            deduplicated and repeated images count twice).

    Returns:
        The columns of all ranks concatenated in rank order without repeated paths, and their paths.
    """
    if not is_distributed(trainer):
        return columns, list(paths) if paths is not None else None
    shares: list[Any] = [None] * trainer.world_size  # type: ignore[union-attr]
    # CPU tensors of different lengths per rank: objects, not tensors
    dist.all_gather_object(shares, (columns, list(paths) if paths is not None else None))
    merged = {name: _concatenate([share[0][name] for share in shares]) for name in columns}
    if any(share[1] is None for share in shares):
        return merged, None
    all_paths = [path for share in shares for path in share[1]]
    keep = first_occurrences(all_paths)
    return {name: _select(column, keep) for name, column in merged.items()}, [all_paths[i] for i in keep]
