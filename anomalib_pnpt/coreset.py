# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Fast greedy k-center coreset selection that picks exactly what anomalib's ``KCenterGreedy`` picks.

PatchCore's memory bank is a greedy k-center coreset of all training patch vectors. anomalib's
``KCenterGreedy`` updates every row's distance to its nearest chosen centre with one
``linalg.norm(features - centre)`` over the whole ``N x D`` matrix per chosen centre: it reads every row and
allocates an ``N x D`` temporary each step, so on a CPU a 1 M-patch bank (three classes, 256 px, stride 8) at
anomalib's default ratio 0.1 takes about a day.

:class:`FastKCenterGreedy` computes the same distances only for rows whose nearest-centre distance ``d(x)`` the
new centre ``c`` may lower. Projecting onto orthonormal directions never lengthens a vector, so
``||P^T (x - c)|| <= ||x - c||``: a row whose projected distance already reaches ``d(x)`` cannot change. The
bound is refined in a cascade over the leading principal directions (16, then 32, then 64 of them by default):
the first level is one matrix-vector product over all rows (``||Px||^2 - 2 Px.Pc + ||Pc||^2``), each further
level adds the next directions' squared distance for the rows still in doubt only, and the exact distance is
computed for the few rows left (on the unified bank, well under 1 % per step after the first hundred centres).
Float32 rounding is covered by a relative margin and, for the matrix-vector form, an absolute one. Computed rows
get the very same ``linalg.norm(rows - centre)`` and ``minimum`` as anomalib, so the distances are bit-identical,
and the next centre is the same ``torch.max`` over the same array. The random projection and the random first
centre are anomalib's own calls, made in the same order, so a given seed selects the same indices
(``tests/test_coreset.py`` compares them).

A stock ``Patchcore`` gets it through :class:`FastPatchcore` (same arguments, same results) or, for a model
already built, :func:`fast_patchcore_fit`.

Example:
    >>> import torch
    >>> from anomalib_pnpt.coreset import FastKCenterGreedy
    >>> _ = torch.manual_seed(0)
    >>> embedding = torch.randn(2000, 64)
    >>> FastKCenterGreedy(embedding, sampling_ratio=0.01).sample_coreset().shape
    torch.Size([20, 64])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from anomalib.models import Patchcore
from anomalib.models.components import KCenterGreedy

logger = logging.getLogger(__name__)

# A row is skipped only when its lower bound beats its distance by this relative margin (float32 sums of a few
# hundred terms err by ~1e-5); the matrix-vector form of the first level also loses ~1e-7 of ||Px||^2 + ||Pc||^2
# to cancellation, covered by _CANCELLATION.
_RELATIVE_MARGIN = 1e-4
_CANCELLATION = 1e-5
# Rows updated in one dense call when most rows are in doubt (the first centres): bounded temporaries.
_DENSE_CHUNK = 8192


def principal_basis(rows: torch.Tensor, dims: int, sample_size: int = 20000) -> torch.Tensor:
    """Orthonormal columns along the leading principal directions of ``rows``, leading first (own generator).

    Args:
        rows: ``(N, D)`` rows.
        dims: Number of directions (at most ``D``).
        sample_size: Rows used to estimate the covariance.

    Returns:
        ``(D, min(dims, D))`` matrix with orthonormal columns.
    """
    sample = rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:sample_size]].double()
    directions = torch.linalg.eigh(torch.cov(sample.T))[1].flip(1)[:, :dims]  # eigh sorts ascending
    return torch.linalg.qr(directions)[0].float()


class FastKCenterGreedy(KCenterGreedy):
    """anomalib's ``KCenterGreedy`` with projected lower bounds: same indices, a fraction of the work.

    Args:
        embedding: ``(N, D)`` patch vectors.
        sampling_ratio: Fraction of rows to keep (anomalib's meaning).
        bound_dims: Leading principal directions of each level of the bound cascade (increasing).
        progress_every_s: Log progress at most this often (seconds); ``0`` disables it.

    Example:
        >>> import torch
        >>> sampler = FastKCenterGreedy(torch.randn(1000, 16), sampling_ratio=0.05)
        >>> len(sampler.select_coreset_idxs())
        50
    """

    def __init__(
        self,
        embedding: torch.Tensor,
        sampling_ratio: float,
        bound_dims: Sequence[int] = (16, 32, 64),
        progress_every_s: float = 30.0,
    ) -> None:
        super().__init__(embedding=embedding, sampling_ratio=sampling_ratio)
        self.bound_dims = tuple(bound_dims)
        self.progress_every_s = progress_every_s
        self.rows_computed = 0

    def _projected_rows(self) -> tuple[int, torch.Tensor]:
        """The first centre and the rows, as anomalib's sampler makes them (its projection and draw, in order)."""
        if self.embedding.ndim == 2:
            self.model.fit(self.embedding)
            features = self.model.transform(self.embedding)
        else:
            features = self.embedding.reshape(self.embedding.shape[0], -1)
        first = int(torch.randint(high=self.n_observations, size=(1,), device=features.device).squeeze())
        return first, features.float().cpu().contiguous()

    def select_coreset_idxs(self) -> list[int]:
        """Select the coreset indices (same as ``KCenterGreedy.select_coreset_idxs`` for the same seed).

        Returns:
            Indices of the selected rows, in selection order.
        """
        first, rows = self._projected_rows()
        num_rows, dims = rows.shape
        levels = sorted({min(d, dims) for d in self.bound_dims})
        basis = principal_basis(rows, levels[-1])
        parts = [basis[:, start:end].contiguous() for start, end in zip([0, *levels[:-1]], levels, strict=True)]
        coordinates = [rows @ part for part in parts]  # each level's projected coordinates, contiguous
        first_norms = coordinates[0].square().sum(1)
        largest_first_norm = float(first_norms.max())

        min_distances = torch.full((num_rows,), torch.inf)  # anomalib's min_distances
        lower = torch.empty(num_rows)
        selected, row = [first], first
        last_log = time.perf_counter()
        for step in range(self.coreset_size - 1):
            centre = rows[row]
            limit = (min_distances * ((1 + _RELATIVE_MARGIN) / (1 - _RELATIVE_MARGIN))).square_()
            # Level 1 for every row: ||P1 (x - c)||^2 by one matrix-vector product, less its rounding error.
            projected = centre @ parts[0]
            projected_norm = float(projected.square().sum())
            torch.addmv(first_norms, coordinates[0], projected, alpha=-2, out=lower)
            lower += projected_norm - _CANCELLATION * (largest_first_norm + projected_norm)
            doubt = (lower < limit).nonzero().flatten()
            if len(doubt) > num_rows // 2:  # early centres: most rows may change, update them all in chunks
                for start in range(0, num_rows, _DENSE_CHUNK):
                    chunk = min_distances[start : start + _DENSE_CHUNK]
                    distances = torch.linalg.norm(rows[start : start + _DENSE_CHUNK] - centre, ord=2, dim=1)
                    torch.minimum(chunk, distances, out=chunk)
                self.rows_computed += num_rows
            else:
                # Further levels add the next directions' squared distances for the rows still in doubt.
                bound = lower[doubt]
                for coordinate, part in zip(coordinates[1:], parts[1:], strict=True):
                    bound = bound + (coordinate[doubt] - centre @ part).square_().sum(1)
                    keep = bound < limit[doubt]
                    doubt, bound = doubt[keep], bound[keep]
                # The rest exactly as anomalib does: min(d, ||x - c||_2).
                distances = torch.linalg.norm(rows[doubt] - centre, ord=2, dim=1)
                min_distances[doubt] = torch.minimum(min_distances[doubt], distances)
                self.rows_computed += len(doubt)
            # As anomalib: the farthest row is next (the same torch.max over the same array); its distance becomes 0.
            row = int(torch.max(min_distances, dim=0)[1])
            min_distances[row] = 0.0
            selected.append(row)
            if self.progress_every_s and time.perf_counter() - last_log > self.progress_every_s:
                last_log = time.perf_counter()
                logger.info("coreset: %d / %d centres selected", step + 2, self.coreset_size)
        return selected


def fast_patchcore_fit(model: Patchcore) -> None:
    """Do what ``Patchcore.fit`` does, with :class:`FastKCenterGreedy` (identical memory bank).

    Args:
        model: A stock anomalib ``Patchcore`` whose training epoch has filled ``model.model.embedding_store``.

    Example:
        >>> from anomalib.models import Patchcore
        >>> model = Patchcore(backbone="resnet18", layers=["layer2"], pre_trained=False, coreset_sampling_ratio=0.5)
        >>> model.model.embedding_store.append(torch.randn(40, 128))
        >>> fast_patchcore_fit(model)
        >>> model.model.memory_bank.shape
        torch.Size([20, 128])
    """
    store = model.model.embedding_store
    if len(store) == 0:
        msg = "Embedding store is empty. Cannot perform coreset selection."
        raise ValueError(msg)
    bank = torch.vstack(store)
    store.clear()
    model.model.memory_bank = FastKCenterGreedy(bank, sampling_ratio=model.coreset_sampling_ratio).sample_coreset()


class FastPatchcore(Patchcore):
    """anomalib's ``Patchcore`` with the fast coreset selection: same arguments, same memory bank.

    Use it wherever ``Patchcore`` is used (``anomalib train --model anomalib_pnpt.FastPatchcore ...``); the
    greedy selection gives the same indices as stock PatchCore for the same seed, so the results are stock
    PatchCore's, reached in a fraction of the time.

    Example:
        >>> model = FastPatchcore(backbone="resnet18", layers=["layer2"], pre_trained=False)
        >>> model.coreset_sampling_ratio
        0.1
    """

    def fit(self) -> None:
        """Subsample the collected embeddings with :class:`FastKCenterGreedy`."""
        fast_patchcore_fit(self)
