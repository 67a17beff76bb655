# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Gathering per-sample results across ranks: every rank's samples, each image once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import distributed as dist
from torch import multiprocessing as mp

from anomalib_pnpt.distributed import first_occurrences, gather_samples

# Two ranks' shares of five images, as Lightning's DistributedSampler deals them: rank 1 gets "a" again so
# that both ranks have three.
SHARES = {
    0: (["a", "c", "e"], torch.tensor([0.0, 2.0, 4.0])),
    1: (["b", "d", "a"], torch.tensor([1.0, 3.0, 0.0])),
}


def _gather_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        paths, scores = SHARES[rank]
        columns = {"score": scores, "category": [f"class_{p}" for p in paths], "map": None}
        trainer = SimpleNamespace(world_size=2)  # all gather_samples asks of the trainer
        merged, merged_paths = gather_samples(trainer, columns, paths)  # type: ignore[arg-type]
        torch.save({"merged": merged, "paths": merged_paths}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_first_occurrences_keeps_order_and_drops_repeats() -> None:
    """Each path's first index, in order."""
    assert first_occurrences(["a", "c", "e", "b", "d", "a"]) == [0, 1, 2, 3, 4]


def test_one_process_returns_the_columns_unchanged() -> None:
    """Without a process group nothing is gathered or dropped (a repeated path stays)."""
    columns = {"score": torch.tensor([1.0, 2.0])}
    merged, paths = gather_samples(None, columns, ["a", "a"])
    assert merged is columns
    assert paths == ["a", "a"]


def test_two_ranks_gather_every_image_once(tmp_path: Path) -> None:
    """Both ranks end with the five images (the sampler's repeat dropped), tensors and lists aligned."""
    mp.spawn(_gather_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["paths"] == ["a", "c", "e", "b", "d"]
        assert result["merged"]["score"].tolist() == [0.0, 2.0, 4.0, 1.0, 3.0]
        assert result["merged"]["category"] == [f"class_{p}" for p in result["paths"]]
        assert result["merged"]["map"] is None
