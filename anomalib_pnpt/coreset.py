# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Fast greedy k-center coreset selection that picks exactly what anomalib's ``KCenterGreedy`` picks.

PatchCore's memory bank is a greedy k-center coreset of all training patch vectors. anomalib's
``KCenterGreedy`` updates every row's distance to its nearest chosen centre with one
``linalg.norm(features - centre)`` over the whole ``N x D`` matrix per chosen centre: it allocates an
``N x D`` temporary each iteration and reads all rows, so on a CPU a 1 M-patch bank (three classes, 256 px,
stride 8) at anomalib's default ratio 0.1 takes hours.

:class:`FastKCenterGreedy` computes the same distances but skips rows whose nearest-centre distance the new
centre provably cannot lower. Every row remembers its nearest chosen centre ``a``, at distance ``d(x)``; the
triangle inequality gives ``||x - c|| >= ||c - a|| - d(x)``, so a new centre ``c`` with ``||c - a|| >= 2 d(x)``
cannot change ``d(x)`` (a small margin covers float32 rounding). Rows are stored in an order that puts similar
rows together (k-means labels), in contiguous blocks; a block is computed only if one of its rows may change,
and as the coverage radius shrinks most blocks are skipped. Computed rows get the very same
``linalg.norm(rows - centre)`` and ``minimum`` as anomalib, row by row, so the distances are bit-identical,
and the next centre is the same ``torch.max`` (the first of equal maxima in the original order).
The random projection and the random first centre are anomalib's own calls, made in the same order, so a
given seed selects the same indices (``tests/test_coreset.py`` compares them).

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

import torch
from anomalib.models import Patchcore
from anomalib.models.components import KCenterGreedy

logger = logging.getLogger(__name__)

# The bound and the computed distances are both float32; a block is skipped only when the bound beats the
# block's largest distance by this relative margin (float32 norms of a few hundred terms err by ~1e-5).
_RELATIVE_MARGIN = 1e-4


def similarity_order(features: torch.Tensor, group_size: int = 1024, iterations: int = 3) -> torch.Tensor:
    """A row order that puts similar rows next to each other (rows sorted by a k-means label).

    Uses its own random generator: the global one must stay exactly as anomalib's sampler leaves it.

    Args:
        features: ``(N, D)`` rows.
        group_size: Average number of rows per k-means cluster.
        iterations: Lloyd iterations.

    Returns:
        ``(N,)`` permutation.
    """
    n = features.shape[0]
    num_groups = max(1, n // group_size)
    generator = torch.Generator().manual_seed(0)
    centroids = features[torch.randperm(n, generator=generator)[:num_groups]].clone()
    labels = torch.empty(n, dtype=torch.long)
    chunk = 32768
    for _ in range(iterations):
        centroid_norms = centroids.pow(2).sum(1)
        for start in range(0, n, chunk):
            # ||x||^2 is the same for every centroid of a row: the argmin needs only ||mu||^2 - 2 x.mu
            labels[start : start + chunk] = (centroid_norms - 2 * features[start : start + chunk] @ centroids.T).argmin(
                1
            )
        counts = torch.bincount(labels, minlength=num_groups)
        sums = torch.zeros_like(centroids).index_add_(0, labels, features)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return torch.argsort(labels, stable=True)


def _runs(active: torch.Tensor, block_size: int, num_rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Row ranges covering the active blocks, consecutive blocks merged into runs of at most ``max_rows`` rows."""
    runs: list[tuple[int, int]] = []
    for block in active.nonzero().flatten().tolist():
        start, end = block * block_size, min((block + 1) * block_size, num_rows)
        if runs and runs[-1][1] == start and end - runs[-1][0] <= max_rows:
            runs[-1] = (runs[-1][0], end)
        elif start < end:
            runs.append((start, end))
    return runs


def _update(
    rows: torch.Tensor, centre: torch.Tensor, k: int, min_distances: torch.Tensor, cell: torch.Tensor, out: torch.Tensor
) -> None:
    """Update these rows as anomalib's sampler does, row by row: ``min(d, ||x - c||_2)``; cell ``k`` where lower."""
    distances = out[: rows.shape[0]]
    torch.linalg.norm(rows - centre, ord=2, dim=1, out=distances)
    cell[distances < min_distances] = k
    torch.minimum(min_distances, distances, out=min_distances)


def principal_basis(rows: torch.Tensor, dims: int, sample_size: int = 20000) -> torch.Tensor:
    """Orthonormal columns spanning the leading principal directions of ``rows`` (own random generator).

    Projecting onto orthonormal columns never lengthens a vector, so ``||P^T (x - c)|| <= ||x - c||`` is a lower
    bound of the distance that reads ``dims / D`` of the bytes of the rows.

    Args:
        rows: ``(N, D)`` rows.
        dims: Number of directions (at most ``D``).
        sample_size: Rows used to estimate the covariance.

    Returns:
        ``(D, min(dims, D))`` matrix with orthonormal columns.
    """
    sample = rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:sample_size]].double()
    directions = torch.linalg.eigh(torch.cov(sample.T))[1][:, -dims:]
    return torch.linalg.qr(directions)[0].float()


class FastKCenterGreedy(KCenterGreedy):
    """anomalib's ``KCenterGreedy`` with triangle-inequality pruning: same indices, a fraction of the work.

    Args:
        embedding: ``(N, D)`` patch vectors.
        sampling_ratio: Fraction of rows to keep (anomalib's meaning).
        block_size: Rows per contiguous block: a block is computed when any of its rows may change.
        bound_dims: Principal directions of the projected lower bound.
        chunk_rows: Most rows computed in one call (consecutive active blocks are merged up to this).
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
        block_size: int = 512,
        bound_dims: int = 64,
        chunk_rows: int = 8192,
        progress_every_s: float = 30.0,
    ) -> None:
        super().__init__(embedding=embedding, sampling_ratio=sampling_ratio)
        self.block_size = block_size
        self.chunk_rows = max(chunk_rows, block_size)
        self.bound_dims = bound_dims
        self.progress_every_s = progress_every_s
        self.rows_computed = 0

    def _ordered_rows(self) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected rows and first centre as anomalib's sampler makes them; similar rows made adjacent.

        Returns:
            The first centre's (original) index, the reordered rows, ``order`` (new -> original index) and
            ``position`` (original -> new index).
        """
        # anomalib's own projection and first draw, in anomalib's order (they consume the global RNGs).
        if self.embedding.ndim == 2:
            self.model.fit(self.embedding)
            features = self.model.transform(self.embedding)
        else:
            features = self.embedding.reshape(self.embedding.shape[0], -1)
        first = int(torch.randint(high=self.n_observations, size=(1,), device=features.device).squeeze())
        features = features.float().cpu()
        order = similarity_order(features, group_size=2 * self.block_size)
        rows = features[order].contiguous()  # similar rows in the same blocks; `order` maps back
        del features
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order))
        return first, rows, order, position

    def select_coreset_idxs(self) -> list[int]:
        """Select the coreset indices (same as ``KCenterGreedy.select_coreset_idxs`` for the same seed).

        Returns:
            Indices of the selected rows, in selection order.
        """
        first, rows, order, position = self._ordered_rows()
        num_rows, size = rows.shape[0], self.block_size
        num_blocks = -(-num_rows // size)
        basis = principal_basis(rows, self.bound_dims)
        projected = torch.zeros(num_blocks * size, basis.shape[1])
        projected[:num_rows] = rows @ basis

        # min_distances is anomalib's (here in block order): every row's distance to its nearest chosen centre,
        # cell[x] the position of that centre in the selection. Padding rows sit at distance 0 and never change.
        min_distances = torch.zeros(num_blocks * size)
        min_distances[:num_rows] = torch.inf
        cell = torch.zeros(num_blocks * size, dtype=torch.long)
        centres = torch.empty(self.coreset_size, rows.shape[1])
        distances = torch.empty(max(size, self.chunk_rows))
        all_blocks = torch.ones(num_blocks, dtype=torch.bool)
        check_bounds, skipped_checks = True, 0
        selected = [first]
        row = int(position[first])
        last_log = time.perf_counter()
        for k in range(self.coreset_size - 1):  # k: position in the selection of the centre in `row`
            centre = rows[row]
            centres[k] = centre
            if check_bounds:
                # A row x of cell a has ||x - c|| >= ||c - a|| - ||x - a|| = ||c - a|| - d(x), which is >= d(x)
                # when ||c - a|| >= 2 d(x): c cannot lower d(x) (the margin covers float32 rounding). Second bound:
                # the projected distance. Rows neither bound rules out are computed exactly.
                gap = torch.linalg.norm(centres[: k + 1] - centre, dim=1)
                limit = min_distances * (1 + _RELATIVE_MARGIN)
                may_change = gap[cell] * (1 - _RELATIVE_MARGIN) < 2 * limit
                may_change &= torch.linalg.norm(projected - centre @ basis, dim=1) * (1 - _RELATIVE_MARGIN) < limit
                active = may_change.view(num_blocks, size).any(1)
                # While most blocks are active the bounds cost more than they save: skip them for a while.
                check_bounds = float(active.float().mean()) < 0.5
                skipped_checks = 0
            else:
                active = all_blocks
                skipped_checks += 1
                check_bounds = skipped_checks >= 16
            for start, end in _runs(active, size, num_rows, max_rows=self.chunk_rows):
                _update(rows[start:end], centre, k, min_distances[start:end], cell[start:end], distances)
                self.rows_computed += end - start
            # As anomalib: the farthest row is next (torch.max: the first of equal maxima, by original index);
            # its distance becomes 0.
            farthest = min_distances.max()
            ties = (min_distances == farthest).nonzero().flatten()
            row = int(ties[0]) if len(ties) == 1 else int(position[int(order[ties].min())])
            min_distances[row] = 0.0
            cell[row] = k + 1
            selected.append(int(order[row]))
            if self.progress_every_s and time.perf_counter() - last_log > self.progress_every_s:
                last_log = time.perf_counter()
                logger.info("coreset: %d / %d centres selected", k + 2, self.coreset_size)
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
