# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Feature jitter: the training noise both reconstruction models add to their input features.

UniAD (You et al., NeurIPS 2022) showed that a reconstruction transformer trained on clean features
learns the identity shortcut and then reconstructs anomalies too. Both PNPT and OneNIP add Gaussian noise
to every input feature vector during training, scaled by the vector's own norm, while the reconstruction
target stays clean: the network must learn to map noisy features back onto the normal manifold.

Example:
    >>> import torch
    >>> vectors = torch.ones(2, 5, 8)
    >>> feature_jitter(vectors, scale=0.0).equal(vectors)
    True
    >>> feature_jitter(vectors, scale=20.0).shape
    torch.Size([2, 5, 8])
"""

from __future__ import annotations

import torch


def feature_jitter(vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """Add noise with per-element standard deviation ``scale * ||v||_2 / D`` to each vector ``v``.

    Args:
        vectors: Feature vectors ``(..., D)`` (the last dimension is the feature).
        scale: Jitter strength (UniAD, PNPT and OneNIP use 20); 0 returns the input unchanged.

    Returns:
        The jittered vectors, same shape.
    """
    if scale <= 0:
        return vectors
    norm = vectors.norm(dim=-1, keepdim=True)
    return vectors + torch.randn_like(vectors) * (scale * norm / vectors.shape[-1])
