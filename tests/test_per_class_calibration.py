# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Per-class thresholds: calibrated on normal validation images only, applied by retrieved class."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from anomalib.data import InferenceBatch

from anomalib_pnpt.per_class_calibration import PerClassPostProcessor


def _calibrated(**kwargs: object) -> PerClassPostProcessor:
    """Class 0 runs low (normal scores 1..2), class 1 runs high (normal scores 10..12)."""
    post = PerClassPostProcessor(**kwargs)
    scores = torch.tensor([1.0, 1.5, 2.0, 10.0, 11.0, 12.0])
    maps = scores.view(6, 1, 1, 1).expand(6, 1, 4, 4).clone()
    maps[:, :, 0, 0] -= 0.5  # a range inside every map
    post.set_statistics(class_ids=torch.tensor([0, 0, 0, 1, 1, 1]), scores=scores, maps=maps, num_classes=2)
    return post


def test_each_class_is_judged_against_its_own_normal_images() -> None:
    post = _calibrated()
    # 3.0 is far above class 0's normal images but well inside class 1's.
    batch = InferenceBatch(pred_score=torch.tensor([3.0, 3.0, 13.0]), anomaly_map=torch.full((3, 1, 4, 4), 3.0))
    result = post(batch, class_ids=torch.tensor([0, 1, 1]))
    assert result.pred_label.tolist() == [True, False, True]
    assert result.pred_mask[0].all() and not result.pred_mask[1].any()
    # Normalised: the class's calibrated threshold maps to 0.5, anomalib's convention.
    at_threshold = post(InferenceBatch(pred_score=torch.tensor([2.0, 12.0])), class_ids=torch.tensor([0, 1]))
    assert torch.allclose(at_threshold.pred_score, torch.tensor([0.5, 0.5]))


def test_one_global_threshold_misjudges_the_low_class() -> None:
    post = _calibrated(per_class=False)
    result = post(InferenceBatch(pred_score=torch.tensor([3.0, 11.0])), class_ids=torch.tensor([0, 1]))
    # The global threshold is the highest normal score of ALL classes (12): the defect of class 0 is missed.
    assert result.pred_label.tolist() == [False, False]
    assert float(post.image_threshold) == 12.0


def test_quantile_rule_and_class_without_data_falls_back_to_global() -> None:
    post = PerClassPostProcessor(image_quantile=0.5)
    post.set_statistics(
        class_ids=torch.tensor([0, 0, 0, 0]), scores=torch.tensor([1.0, 2.0, 3.0, 4.0]), maps=None, num_classes=3
    )
    assert post.class_statistics()["image_threshold"][0] == 2.0
    assert torch.isnan(post.class_statistics()["image_threshold"][1:]).all()
    result = post(InferenceBatch(pred_score=torch.tensor([2.5, 2.5])), class_ids=torch.tensor([0, 2]))
    assert result.pred_label.tolist() == [True, True]  # class 2 uses the global threshold (2.0)
    with pytest.raises(ValueError, match="quantiles"):
        PerClassPostProcessor(pixel_quantile=0.0)


def test_validation_hooks_use_normal_images_only() -> None:
    post = PerClassPostProcessor()
    post.on_validation_epoch_start(None, None)
    outputs = SimpleNamespace(
        pred_score=torch.tensor([1.0, 2.0, 100.0]),
        anomaly_map=torch.rand(3, 1, 4, 4),
        gt_label=torch.tensor([0, 0, 1]),
        pred_category_id=torch.tensor([0, 1, 1]),
    )
    post.on_validation_batch_end(None, None, outputs)
    post.on_validation_epoch_end(None, SimpleNamespace(prompt_categories=["a", "b", "c"]))
    table = post.class_statistics()
    assert post.num_classes == 3  # sized to the prompt pool, not to the classes seen
    assert table["image_threshold"][:2].tolist() == [1.0, 2.0]  # the anomalous 100 was ignored
    assert float(post.image_threshold) == 2.0


def test_statistics_survive_a_state_dict_round_trip() -> None:
    post = _calibrated()
    restored = PerClassPostProcessor()
    restored.load_state_dict(post.state_dict())
    assert restored.num_classes == 2
    for name, values in post.class_statistics().items():
        assert torch.equal(restored.class_statistics()[name], values)
    assert restored.checkpoint_config()["image_quantile"] == 1.0


def test_anomalibs_own_threshold_state_is_left_alone() -> None:
    """The calibration is this package's table; anomalib's private global buffers are never written."""
    post = _calibrated()
    for name in ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max"):
        assert torch.isnan(getattr(post, name)), name
    assert float(post.image_threshold) == 12.0  # anomalib's public property reports the table's overall row
    assert float(post.pixel_threshold) == 12.0
