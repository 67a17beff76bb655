# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Threshold-free anomaly metrics computed on raw scores and maps.

All metrics are exact (no threshold binning) and written here on purpose: torchmetrics' binary
AUROC/AP apply a SIGMOID to scores outside ``[0, 1]``, which squashes raw anomaly scores (PaDiM's run into
the hundreds) into ties at 1.0 and reports AUROC 0.5; anomalib's ``AUPRO`` is a stateful metric tied to
its evaluator and to normalised outputs.

* AUROC is the Mann-Whitney statistic with tied ranks averaged.
* AP is the step-wise sum over distinct thresholds (as scikit-learn defines it).
* PRO is exact too (every distinct score is a threshold): pixels are sorted once by score, every normal
  pixel adds ``1 / N_normal`` to the false-positive rate and every pixel of defect region ``r`` adds
  ``1 / (|r| * R)`` to the mean per-region overlap, so cumulative sums give the whole PRO-vs-FPR curve in
  ``O(n log n)``. The curve is integrated up to ``fpr_limit`` (0.3, as in MVTec AD's protocol) and divided
  by it, so a perfect detector scores 1.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 4, 4); maps[0, :2, :2] = 1.0
    >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2, :2] = True
    >>> round(pro_score(maps, masks), 3)
    1.0
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata

# 8-connectivity for defect regions, as in MVTec AD's evaluation code.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _both_classes(labels: torch.Tensor) -> bool:
    return bool(labels.any()) and not bool(labels.all())


def _as_numpy(scores: torch.Tensor) -> np.ndarray:
    values = scores.detach().cpu().double().numpy().ravel()
    if not np.isfinite(values).all():
        msg = f"{int((~np.isfinite(values)).sum())} anomaly scores are NaN or infinite: the model's output is broken."
        raise ValueError(msg)
    return values


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve; ``nan`` when only one class is present.

    Args:
        scores: Any shape; higher means more anomalous.
        labels: Same shape, 1 for anomalous.

    Returns:
        AUROC in ``[0, 1]`` or ``nan``.
    """
    labels = labels.flatten().bool()
    if not _both_classes(labels):
        return math.nan
    positive = labels.cpu().numpy()
    ranks = rankdata(_as_numpy(scores))  # ties get their average rank
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _operating_points(scores: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """True positives and predicted positives at every threshold, from the highest score down.

    One operating point per distinct score: the last index of each group of equal scores.
    """
    values = _as_numpy(scores)
    order = np.argsort(-values, kind="stable")
    true_positives = np.cumsum(labels.flatten().bool().cpu().numpy()[order])
    sorted_values = values[order]
    last = np.r_[sorted_values[1:] != sorted_values[:-1], True]
    return true_positives[last], np.flatnonzero(last) + 1


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision (area under the precision-recall curve); ``nan`` without positives.

    Args:
        scores: Any shape; higher means more anomalous.
        labels: Same shape, 1 for anomalous.

    Returns:
        AP in ``[0, 1]`` or ``nan``.
    """
    labels = labels.flatten().bool()
    if not bool(labels.any()):
        return math.nan
    tp, predicted = _operating_points(scores, labels)
    precision = tp / predicted
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Best F1 over all thresholds (threshold-free: the oracle operating point); ``nan`` without positives.

    Args:
        scores: Any shape; higher means more anomalous.
        labels: Same shape, 1 for anomalous.

    Returns:
        The largest ``2 TP / (2 TP + FP + FN)`` over thresholds at the distinct scores.

    Example:
        >>> import torch
        >>> f1_max(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.8
    """
    labels = labels.flatten().bool()
    if not bool(labels.any()):
        return math.nan
    tp, predicted = _operating_points(scores, labels)
    return float(np.max(2 * tp / (predicted + tp[-1])))


def f1_score(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """F1 of binary predictions (labels or mask pixels); ``nan`` when there is neither a positive nor a hit.

    Args:
        predictions: Any shape, truthy where predicted anomalous.
        labels: Same shape, 1 for anomalous.

    Returns:
        ``2 TP / (2 TP + FP + FN)`` in ``[0, 1]`` or ``nan``.
    """
    predicted = predictions.flatten().bool().cpu()
    actual = labels.flatten().bool().cpu()
    true_positives = int((predicted & actual).sum())
    denominator = 2 * true_positives + int((predicted & ~actual).sum()) + int((~predicted & actual).sum())
    return 2 * true_positives / denominator if denominator else math.nan


def pro_curve(maps: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-region-overlap curve: FPR and mean region overlap at every distinct threshold.

    Args:
        maps: Anomaly maps ``(N, H, W)``.
        masks: Ground-truth masks ``(N, H, W)``, non-zero = defect.

    Returns:
        ``(fpr, pro)``, both increasing, starting at ``(0, 0)``.
    """
    scores = _as_numpy(maps)
    masks_np = masks.detach().cpu().numpy().astype(bool)
    region_ids = np.zeros(masks_np.shape, dtype=np.int64)
    n_regions = 0
    for index, mask in enumerate(masks_np):
        labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        region_ids[index] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    region_ids = region_ids.ravel()
    normal = region_ids == 0
    n_normal = int(normal.sum())
    region_sizes = np.bincount(region_ids, minlength=n_regions + 1).astype(np.float64)
    fpr_step = np.where(normal, 1.0 / max(n_normal, 1), 0.0)
    pro_step = np.where(normal, 0.0, 1.0 / (region_sizes[region_ids] * max(n_regions, 1)))
    order = np.argsort(-scores, kind="stable")
    fpr = np.cumsum(fpr_step[order])
    pro = np.cumsum(pro_step[order])
    # Pixels with equal scores are one threshold: keep the curve point after the last of each tie group.
    sorted_scores = scores[order]
    last_of_group = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    return np.r_[0.0, fpr[last_of_group]], np.r_[0.0, pro[last_of_group]]


def pro_score(maps: torch.Tensor, masks: torch.Tensor, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit``; ``nan`` without defect regions or normal pixels.

    Args:
        maps: Anomaly maps ``(N, H, W)``.
        masks: Ground-truth masks ``(N, H, W)``.
        fpr_limit: Upper integration limit of the false-positive rate.

    Returns:
        AUPRO / ``fpr_limit`` in ``[0, 1]`` or ``nan``.
    """
    masks = masks.bool()
    if not _both_classes(masks):
        return math.nan
    fpr, pro = pro_curve(maps, masks)
    # Cut the curve at fpr_limit, interpolating the PRO value there.
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    pro_at_limit = float(np.interp(fpr_limit, fpr, pro))
    fpr_cut = np.r_[fpr[:end], fpr_limit]
    pro_cut = np.r_[pro[:end], pro_at_limit]
    return float(np.trapezoid(pro_cut, fpr_cut) / fpr_limit)
