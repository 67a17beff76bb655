# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The unseen synthetic defects (``benchmarks/unseen_defects.py``) that choose an epoch on validation images."""

from __future__ import annotations

import torch
from unseen_defects import UnseenDefects


def test_masks_mark_the_changed_pixels_and_the_copies_match_the_plain_call() -> None:
    images = torch.zeros(12, 3, 64, 64)  # grey 0.5 after the default normalisation
    copies, masks = UnseenDefects(seed=3).copies_and_masks(images)
    assert masks.shape == (12, 64, 64) and masks.dtype == torch.bool
    change = (copies - images).abs().amax(dim=1)
    for image_change, mask in zip(change, masks, strict=True):
        assert mask.any()
        assert bool((image_change[mask] > 0.05).all())  # every defect pixel differs from the image
        assert float(image_change[~mask].max()) <= float(image_change[mask].min()) + 1e-6
    assert torch.equal(UnseenDefects(seed=3)(images), copies)
