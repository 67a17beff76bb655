# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's prompt choice: typical images as inference prompts, a bank that does not depend on the loader's order."""

from __future__ import annotations

import torch

from anomalib_pnpt.models.onenip.prompt_selection import PromptSelection


def _selection(order: list[int]) -> PromptSelection:
    """Two classes of four images; class 0's images 0 and 1 are typical (near the class mean), 3 is an outlier."""
    keys = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.0, 1.0], [0.1, 1.0], [0.2, 0.9], [1, 0]])
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    features = torch.arange(8.0).view(8, 1, 1, 1)  # feature = the image's index
    paths = [f"img{i}.png" for i in range(8)]
    selection = PromptSelection(num_classes=2, prompts_per_class=2, bank_capacity=3)
    for i in order:
        selection.add(ids[i : i + 1], keys[i : i + 1], features[i : i + 1], paths[i : i + 1])
    return selection


def test_prompts_are_typical_and_the_choice_does_not_depend_on_order() -> None:
    forward, backward = _selection(list(range(8))).choose(), _selection(list(reversed(range(8)))).choose()
    for first, second in zip(forward, backward, strict=True):
        assert torch.equal(first, second)
    assert forward.prompt_class_ids.tolist() == [0, 0, 1, 1]
    assert forward.bank_class_ids.tolist() == [0, 0, 0, 1, 1, 1]  # capacity 3 of 4 images per class
    chosen = forward.prompt_features.flatten().long().tolist()
    assert 3 not in chosen[:2] and 7 not in chosen[2:]  # the outliers are never class prompts
