# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The fast coreset selection picks exactly anomalib's KCenterGreedy indices, and FastPatchcore uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomalib.models import Patchcore
from anomalib.models.components import KCenterGreedy

from anomalib_pnpt.coreset import FastKCenterGreedy, FastPatchcore, fast_patchcore_fit


def _seeded_selection(
    sampler_class: type, embedding: torch.Tensor, ratio: float, seed: int = 3, **kwargs: float
) -> list[int]:
    torch.manual_seed(seed)
    np.random.seed(seed)  # anomalib's random projection draws column indices with numpy
    return sampler_class(embedding, sampling_ratio=ratio, **kwargs).select_coreset_idxs()


def _clustered(rows: int, dims: int, clusters: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(clusters, dims, generator=generator)
    return centres[torch.randint(clusters, (rows,), generator=generator)] + 0.5 * torch.randn(
        rows, dims, generator=generator
    )


@pytest.mark.parametrize(
    ("embedding", "ratio"),
    [
        (torch.randn(3000, 64, generator=torch.Generator().manual_seed(1)), 0.1),
        (_clustered(4000, 128, 25), 0.05),
        (_clustered(2000, 32, 8), 0.3),
    ],
)
def test_same_indices_as_anomalib(embedding: torch.Tensor, ratio: float) -> None:
    expected = _seeded_selection(KCenterGreedy, embedding, ratio)
    fast = _seeded_selection(FastKCenterGreedy, embedding, ratio)
    assert fast == expected


def test_duplicate_rows_tie_break_like_anomalib() -> None:
    # Repeated rows give equal distances: the lowest index must win, as torch.max does in anomalib.
    base = _clustered(300, 16, 5)
    embedding = torch.cat([base, base, base])[torch.randperm(900, generator=torch.Generator().manual_seed(2))]
    assert _seeded_selection(FastKCenterGreedy, embedding, 0.2) == _seeded_selection(KCenterGreedy, embedding, 0.2)


def test_pruning_skips_work_on_clustered_rows_and_still_selects_anomalibs_indices() -> None:
    # Clustered rows and short cascades: most steps use the bounds (not the dense passes), so a wrong bound shows.
    embedding = _clustered(6000, 32, 60)
    torch.manual_seed(0)
    np.random.seed(0)
    sampler = FastKCenterGreedy(embedding, sampling_ratio=0.08, bound_dims=(4, 8, 16))
    fast = sampler.select_coreset_idxs()
    assert sampler.rows_computed < 0.5 * len(embedding) * (sampler.coreset_size - 1)
    assert fast == _seeded_selection(KCenterGreedy, embedding, 0.08, seed=0)


def test_fast_patchcore_builds_stock_patchcores_memory_bank() -> None:
    bank = _clustered(2000, 48, 10)
    stock = Patchcore(backbone="resnet18", layers=["layer2"], pre_trained=False, coreset_sampling_ratio=0.05)
    fast = FastPatchcore(backbone="resnet18", layers=["layer2"], pre_trained=False, coreset_sampling_ratio=0.05)
    for model in (stock, fast):
        model.model.embedding_store.append(bank.clone())
        torch.manual_seed(5)
        np.random.seed(5)
        model.fit()
    assert torch.equal(fast.model.memory_bank, stock.model.memory_bank)
    with pytest.raises(ValueError, match="empty"):
        fast_patchcore_fit(fast)
