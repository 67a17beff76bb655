# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Nearest-patch search that exports: each query location replaced by its nearest row of a patch set.

OneNIP scores a class added after training by its prompt images' nearest patches, and the per-class patch memory
(:mod:`~anomalib_pnpt.models.memory.class_memory`) by its coreset's; both need the search in ONNX and OpenVINO.
"""

from __future__ import annotations

import torch

# Added to the distance of another class's patches: out of reach of any real one. ``torch.where``, not a product
# with a 0/1 mask, so an FP16 export that rounds it to infinity still gives no NaN.
OTHER_CLASS = 1.0e10


def nearest_patch_map(
    features: torch.Tensor, patches: torch.Tensor, excluded: torch.Tensor | None = None
) -> torch.Tensor:
    """Each location of ``features`` replaced by its nearest (L2) row of ``patches``.

    Written with matrix products, argmin and gather (no ``cdist``) so that ONNX and OpenVINO export it.

    Args:
        features: ``(B, C, h, w)`` query features.
        patches: ``(N, C)`` rows shared by every image, or ``(B, N, C)`` rows of each image.
        excluded: ``(B, N)`` rows out of reach for each image (another class's), or ``None``.

    Returns:
        ``(B, C, h, w)``.

    Example:
        >>> rows = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
        >>> nearest_patch_map(torch.tensor([[[[4.0]], [[6.0]]]]), rows).flatten().tolist()
        [5.0, 5.0]
    """
    query = features.flatten(2).transpose(1, 2)  # (B, L, C)
    # |p|^2 - 2 q.p: the squared distance up to |q|^2, the same for every patch of a row.
    distance = patches.pow(2).sum(-1).unsqueeze(-2) - 2 * query @ patches.transpose(-1, -2)  # (B, L, N)
    if excluded is not None:
        distance = distance + torch.where(excluded, OTHER_CLASS, 0.0).unsqueeze(1)
    nearest = distance.argmin(dim=-1)  # (B, L)
    if patches.ndim == 2:
        chosen = patches[nearest]
    else:
        chosen = torch.gather(patches, 1, nearest.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    return chosen.transpose(1, 2).reshape(features.shape)
