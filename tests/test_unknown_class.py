# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The unknown-class bound: fitted on normal validation images only, it flags images of no known class."""

from __future__ import annotations

import math

import torch
from anomalib.data import InferenceBatch

from anomalib_pnpt.per_class_calibration import PerClassPostProcessor
from anomalib_pnpt.unknown_class import UnknownClassBound


def test_bound_is_halfway_to_the_closest_other_class_and_never_above_the_own_images() -> None:
    bound = UnknownClassBound()
    similarity = torch.tensor([[0.99, 0.60], [0.95, 0.50], [0.80, 0.97], [0.30, 0.93]])
    bound.fit(torch.tensor([0, 0, 1, 1]), similarity)
    # class 0: own min 0.95, closest other image 0.80 -> 0.875; class 1: own min 0.93, other 0.60 -> 0.765
    assert torch.allclose(bound.bounds, torch.tensor([0.875, 0.765]))
    # Classes that overlap: the bound stays at the least similar own image (no own image is flagged).
    bound.fit(torch.tensor([0, 1]), torch.tensor([[0.90, 0.92], [0.95, 0.96]]))
    assert bound.bounds[0] == torch.tensor(0.90)


def test_a_class_without_another_to_compare_has_no_bound() -> None:
    bound = UnknownClassBound()
    bound.fit(torch.tensor([0, 0]), torch.tensor([[0.9], [0.95]]))
    assert math.isnan(float(bound.bounds[0]))
    assert not bound(torch.tensor([0]), torch.tensor([[0.1]]))[1].any()


def test_post_processor_labels_unknown_images_anomalous_with_score_one() -> None:
    post = PerClassPostProcessor()
    class_ids = torch.tensor([0, 0, 1, 1])
    similarity = torch.tensor([[0.99, 0.60], [0.95, 0.50], [0.80, 0.97], [0.30, 0.93]])
    post.set_statistics(class_ids, torch.tensor([1.0, 2.0, 1.0, 2.0]), None, num_classes=2, similarity=similarity)
    query = torch.tensor([[0.99, 0.2], [0.5, 0.4]])  # a normal part of class 0; a part of no known class
    ids = query.argmax(1)
    _, unknown = post.unknown_class(ids, query)
    assert unknown.tolist() == [False, True]
    result = post(InferenceBatch(pred_score=torch.tensor([1.0, 1.0])), ids, unknown)
    assert result.pred_label.tolist() == [False, True]
    assert result.pred_score[1] == 1.0
