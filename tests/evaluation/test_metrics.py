# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Every metric against an independent reference computation on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.measure import label as connected_components
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from anomalib_pnpt.evaluation import auroc, average_precision, evaluate_per_class, pro_score


def reference_pro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """PRO the textbook way: a loop over every distinct threshold, regions from scikit-image."""
    regions = []
    for anomaly_map, mask in zip(maps, masks, strict=True):
        labelled = connected_components(mask, connectivity=2)
        regions += [(anomaly_map, labelled == r) for r in range(1, labelled.max() + 1)]
    normal_scores = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for threshold in np.sort(np.unique(maps))[::-1]:
        fprs.append(float((normal_scores >= threshold).mean()))
        pros.append(float(np.mean([(m[r] >= threshold).mean() for m, r in regions])))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= fpr_limit
    x = np.r_[fprs[keep], fpr_limit]
    y = np.r_[pros[keep], np.interp(fpr_limit, fprs, pros)]
    return float(np.trapezoid(y, x) / fpr_limit)


@pytest.fixture
def predictions() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(6, 24, 24, dtype=torch.bool)
    masks[0, 2:8, 3:9] = True
    masks[0, 15:20, 15:22] = True  # two regions in one image
    masks[2, 10:12, 4:20] = True
    masks[5, 1:4, 1:4] = True
    # Quantised scores in the hundreds: many ties, far outside [0, 1] (as raw PaDiM scores are).
    maps = torch.randint(0, 40, (6, 24, 24), generator=generator).float() * 25 + masks * 300.0
    return maps, masks


def test_auroc_and_ap_match_scikit_learn(predictions: tuple[torch.Tensor, torch.Tensor]) -> None:
    maps, masks = predictions
    scores, labels = maps.flatten().numpy(), masks.flatten().numpy()
    assert auroc(maps, masks) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(maps, masks) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    image_scores = maps.amax(dim=(1, 2))
    image_labels = masks.any(dim=(1, 2))
    assert auroc(image_scores, image_labels) == pytest.approx(roc_auc_score(image_labels, image_scores))
    assert average_precision(image_scores, image_labels) == pytest.approx(
        average_precision_score(image_labels, image_scores)
    )


def test_raw_scores_are_not_squashed() -> None:
    """Large raw scores must rank as they are (a sigmoid would tie them all at 1.0)."""
    scores = torch.tensor([500.0, 510.0, 520.0, 530.0])
    labels = torch.tensor([0, 0, 1, 1])
    assert auroc(scores, labels) == 1.0


def test_pro_matches_reference(predictions: tuple[torch.Tensor, torch.Tensor]) -> None:
    maps, masks = predictions
    expected = reference_pro(maps.numpy(), masks.numpy())
    assert pro_score(maps, masks) == pytest.approx(expected, abs=1e-9)
    # And the limit matters: at FPR 1.0 the reference and ours still agree.
    assert pro_score(maps, masks, fpr_limit=1.0) == pytest.approx(reference_pro(maps.numpy(), masks.numpy(), 1.0))


def test_pro_of_a_perfect_and_an_inverted_map(predictions: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, masks = predictions
    assert pro_score(masks.float(), masks) == pytest.approx(1.0)
    assert pro_score(-masks.float(), masks) < 0.01


def test_sanity_of_reference_roc() -> None:
    fpr, tpr, _ = roc_curve([0, 1], [0.1, 0.9])
    assert tpr[-1] == 1.0 and fpr[0] == 0.0


def test_undefined_metrics_are_nan_and_explained() -> None:
    categories = ["a", "a", "a", "b", "b"]
    scores = torch.tensor([0.1, 0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 1, 1, 1, 1])  # class b has no normal test image
    table, notes = evaluate_per_class(categories, scores, labels)
    assert table.loc["a", "image_AUROC"] == 1.0
    assert math.isnan(table.loc["b", "image_AUROC"])
    assert any("b: no normal test images -> image_AUROC cannot be computed" in n for n in notes)
    assert table.loc["mean", "image_AUROC"] == 1.0  # the mean skips the undefined class
    assert table.loc["mean", "n_defect"] == 4


def test_nan_scores_fail_loudly() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
