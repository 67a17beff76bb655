# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The unknown-class rule: an image unlike every training image of its retrieved class is of no known class."""

from __future__ import annotations

import math

import torch
from anomalib.data import InferenceBatch

from anomalib_pnpt.per_class_calibration import PerClassPostProcessor
from anomalib_pnpt.prompt_pool import PromptPool
from anomalib_pnpt.unknown_class import UnknownClassBound

# Two classes of three training images each, unit keys in 3-D.
KEYS = torch.tensor(
    [[1.0, 0.0, 0.0], [0.95, 0.31, 0.0], [0.95, -0.31, 0.0], [0.0, 1.0, 0.0], [0.0, 0.8, 0.6], [0.0, 0.6, 0.8]]
)
CLASSES = torch.tensor([0, 0, 0, 1, 1, 1])


def test_the_bound_is_the_least_leave_one_out_nearest_similarity_so_every_training_image_fits() -> None:
    bound = UnknownClassBound()
    bound.fit(KEYS, CLASSES)
    unit = torch.nn.functional.normalize(KEYS, dim=-1)
    # class 0: images 1 and 2 each have image 0 as nearest (cos ~0.95); class 1: image 3's nearest is image 4 (0.8)
    torch.testing.assert_close(bound.bounds, torch.stack([unit[1] @ unit[0], unit[3] @ unit[4]]))
    similarity, unknown = bound(CLASSES, KEYS)
    assert not unknown.any()
    torch.testing.assert_close(similarity, torch.ones(6))


def test_an_image_unlike_every_training_image_of_its_class_is_unknown() -> None:
    bound = UnknownClassBound()
    bound.fit(KEYS, CLASSES)
    # Between two training images of class 1; a slight change of one; of class 0's side, but tilted away (cos 0.8
    # to its nearest training image, where class 0's own images are all within cos 0.95 of one another).
    queries = torch.tensor([[0.0, 0.72, 0.72], [0.0, 0.95, 0.05], [0.8, 0.0, 0.6]])
    _, unknown = bound(torch.tensor([1, 1, 0]), queries)
    assert unknown.tolist() == [False, False, True]


def test_added_and_removed_classes_keep_their_own_keys_and_bounds() -> None:
    bound = UnknownClassBound()
    bound.fit(KEYS[:3], CLASSES[:3])
    bound.append(KEYS[3:])
    assert bound.num_classes == 2
    reference = UnknownClassBound()
    reference.fit(KEYS, CLASSES)
    torch.testing.assert_close(bound.bounds, reference.bounds)
    bound.remove(0)
    assert bound.key_classes.tolist() == [0, 0, 0]
    torch.testing.assert_close(bound.bounds, reference.bounds[1:])


def test_a_class_with_one_training_image_has_no_bound() -> None:
    bound = UnknownClassBound()
    bound.fit(KEYS[:4], CLASSES[:4])
    assert math.isnan(float(bound.bounds[1]))
    assert not bound(torch.tensor([1]), torch.tensor([[1.0, 0.0, 0.0]]))[1].any()


def test_the_pool_keeps_every_training_images_key_and_decides_at_retrieval() -> None:
    pool = PromptPool(num_prompts=1)
    pool.begin(2, 3, [(1,)])
    pool.accumulate(CLASSES, KEYS, [torch.zeros(6, 1)])
    pool.finish()
    assert pool.unknown_class.keys.shape == (6, 3)
    retrieval = pool.retrieve(torch.tensor([[0.98, 0.1, 0.0], [0.0, 0.72, 0.72], [0.7, 0.5, 0.5]]))
    assert retrieval.class_ids.tolist() == [0, 1, 0]
    assert retrieval.unknown.tolist() == [False, False, True]


def test_post_processor_labels_unknown_images_anomalous_with_score_one() -> None:
    post = PerClassPostProcessor()
    post.set_statistics(torch.tensor([0, 0, 1, 1]), torch.tensor([1.0, 2.0, 1.0, 2.0]), None, num_classes=2)
    result = post(
        InferenceBatch(pred_score=torch.tensor([1.0, 1.0])), torch.tensor([0, 1]), torch.tensor([False, True])
    )
    assert result.pred_label.tolist() == [False, True]
    assert result.pred_score[1] == 1.0
