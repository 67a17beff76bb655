# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Fast greedy k-center coreset selection that picks exactly what anomalib's ``KCenterGreedy`` picks.

PatchCore's memory bank is a greedy k-center coreset of all training patch vectors. anomalib's
``KCenterGreedy`` updates every row's distance to its nearest chosen centre with one
``linalg.norm(features - centre)`` over the whole ``N x D`` matrix per chosen centre: it allocates an
``N x D`` temporary each iteration and reads all rows, so on a CPU a 1 M-patch bank (three classes, 256 px,
stride 8) at anomalib's default ratio 0.1 takes hours.

:class:`FastKCenterGreedy` computes the same distances but skips rows whose nearest-centre distance the new
centre provably cannot lower. Every row belongs to the cell of its nearest chosen centre ``a``, at distance
``d(x)``; the triangle inequality gives ``||x - c|| >= ||c - a|| - d(x)``, so a new centre ``c`` with
``||c - a|| >= 2 max_cell d`` cannot change any row of that cell (a small margin covers float32 rounding), and
the cell is skipped. As the coverage radius shrinks, most cells are skipped. The remaining rows get the very
same ``linalg.norm(rows - centre)`` and ``minimum`` as anomalib, row by row, so the distances are
bit-identical, and the next centre is the same ``torch.max`` over all rows (the first of equal maxima).
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


class FastKCenterGreedy(KCenterGreedy):
    """anomalib's ``KCenterGreedy`` with triangle-inequality pruning: same indices, a fraction of the work.

    Args:
        embedding: ``(N, D)`` patch vectors.
        sampling_ratio: Fraction of rows to keep (anomalib's meaning).
        progress_every_s: Log progress at most this often (seconds); ``0`` disables it.

    Example:
        >>> import torch
        >>> sampler = FastKCenterGreedy(torch.randn(1000, 16), sampling_ratio=0.05)
        >>> len(sampler.select_coreset_idxs())
        50
    """

    def __init__(self, embedding: torch.Tensor, sampling_ratio: float, progress_every_s: float = 30.0) -> None:
        super().__init__(embedding=embedding, sampling_ratio=sampling_ratio)
        self.progress_every_s = progress_every_s
        self.rows_computed = 0

    def select_coreset_idxs(self) -> list[int]:
        """Select the coreset indices (same as ``KCenterGreedy.select_coreset_idxs`` for the same seed).

        Returns:
            Indices of the selected rows, in selection order.
        """
        # anomalib's own projection and first draw, in anomalib's order (they consume the global RNGs).
        if self.embedding.ndim == 2:
            self.model.fit(self.embedding)
            features = self.model.transform(self.embedding)
        else:
            features = self.embedding.reshape(self.embedding.shape[0], -1)
        idx = int(torch.randint(high=self.n_observations, size=(1,), device=features.device).squeeze())
        features = features.float().cpu().contiguous()
        num_rows = features.shape[0]

        # min_distances is anomalib's: every row's distance to its nearest chosen centre. cell[x] is that centre
        # (its position in the selection), radius[a] an upper bound of min_distances over the rows of cell a.
        min_distances = torch.empty(num_rows, 1)
        cell = torch.zeros(num_rows, dtype=torch.long)
        centres = torch.empty(self.coreset_size, features.shape[1])
        radius = torch.zeros(self.coreset_size)
        selected = [idx]
        last_log = time.perf_counter()
        for k in range(self.coreset_size - 1):  # k: position of the centre `idx` in the selection
            centre = features[idx]
            centres[k] = centre
            if k == 0:
                rows = torch.arange(num_rows)
                candidates = torch.zeros(0, dtype=torch.long)
            else:
                # A row x of cell a has ||x - c|| >= ||c - a|| - ||x - a|| = ||c - a|| - d(x) >= d(x) when
                # ||c - a|| >= 2 radius[a]: the new centre c cannot lower any distance in that cell.
                gap = torch.linalg.norm(centres[:k] - centre, dim=1)
                candidate = gap * (1 - _RELATIVE_MARGIN) < 2 * radius[:k] * (1 + _RELATIVE_MARGIN) + 1e-12
                # Cell k holds only the new centre itself (distance 0 already): never a candidate.
                candidate = torch.cat([candidate, candidate.new_zeros(1)])
                rows = candidate[cell].nonzero().flatten()
                candidates = candidate.nonzero().flatten()
            # anomalib's update for these rows, computed row by row exactly as there: min(d, ||x - c||_2).
            distances = torch.linalg.norm(features.index_select(0, rows) - centre, ord=2, dim=1, keepdim=True)
            self.rows_computed += len(rows)
            if k == 0:
                min_distances.copy_(distances)
            else:
                previous = min_distances[rows]
                moved = rows[(distances < previous).flatten()]
                min_distances[rows] = torch.minimum(previous, distances)
                cell[moved] = k
            # The cells that may have changed get their exact radius again.
            radius[candidates] = 0.0
            radius[k] = 0.0
            radius.scatter_reduce_(0, cell[rows], min_distances[rows, 0], reduce="amax")
            # As anomalib: the farthest row is next (torch.max: the first of equal maxima); its distance becomes 0.
            idx = int(torch.max(min_distances.squeeze(1), dim=0)[1])
            min_distances[idx] = 0.0
            cell[idx] = k + 1
            selected.append(idx)
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
