# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The per-class patch memory that scores a class added after training."""

from __future__ import annotations

import pytest
import torch

from anomalib_pnpt.models.memory.class_memory import ClassPatchMemory
from anomalib_pnpt.nearest_patch import nearest_patch_map


def _features(count: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    return offset + torch.randn(count, 6, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_each_location_takes_its_nearest_patch_of_its_own_class_only() -> None:
    memory = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    memory.set_class(1, _features(3, seed=1, offset=10.0))  # class 0: no memory (a trained class)
    memory.set_class(2, _features(2, seed=2))
    assert memory.sizes(3) == [0, 48, 32]
    query = _features(1, seed=2)[:, :, :2, :2] + 0.01  # near class 2's patches, far from class 1's
    nearest = memory.nearest_patches(query, torch.tensor([2]))
    assert torch.equal(nearest, _features(1, seed=2)[:, :, :2, :2])
    # Asked for class 1, the same query gets class 1's patches although class 2's are closer.
    from_one = memory.nearest_patches(query, torch.tensor([1])).permute(0, 2, 3, 1).reshape(-1, 6)
    class_one = memory.patches[memory.patch_classes == 1]
    assert all(bool((class_one == row).all(dim=1).any()) for row in from_one)


def test_the_eager_per_class_search_finds_what_the_exported_graphs_masked_search_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    memory.set_class(1, _features(3, seed=1, offset=0.5))  # class 0: no memory (a trained class)
    memory.set_class(2, _features(2, seed=2))
    query, class_ids = _features(5, seed=9), torch.tensor([2, 1, 0, 2, 1])
    searched = []  # rows each search compares with

    def spy(features: torch.Tensor, patches: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
        searched.append(len(patches))
        return nearest_patch_map(features, patches, excluded)

    monkeypatch.setattr("anomalib_pnpt.models.memory.class_memory.nearest_patch_map", spy)
    eager = memory.nearest_patches(query, class_ids)
    assert sorted(searched) == [32, 48, 80]  # classes 2 and 1 alone; class 0, without patches, all (masked)
    monkeypatch.setattr("anomalib_pnpt.models.memory.class_memory.is_tracing", lambda: True)
    assert torch.equal(eager, memory.nearest_patches(query, class_ids))
    for image, class_id in enumerate(class_ids.tolist()[:2]):  # each image's own class's rows, in either search
        rows = memory.patches[memory.patch_classes == class_id]
        found = eager[image].flatten(1).T
        assert all(bool((rows == row).all(dim=1).any()) for row in found)


def test_replacing_a_class_replaces_only_its_patches() -> None:
    memory = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    memory.set_class(0, _features(4, seed=0))
    memory.set_class(1, _features(1, seed=1))
    memory.set_class(0, _features(2, seed=5))
    assert memory.sizes(2) == [32, 16]
    assert torch.equal(
        memory.patches[memory.patch_classes == 0], _features(2, seed=5).permute(0, 2, 3, 1).reshape(-1, 6)
    )


def test_the_coreset_keeps_its_share_and_the_rare_normal_patches() -> None:
    memory = ClassPatchMemory(sampling_ratio=0.1, aggregation=1)
    features = _features(8, seed=3)
    features[0, :, 0, :2] += 20.0  # two rare normal patches, far from the others (a part seen rarely)
    assert memory.set_class(0, features) == 13  # a tenth of 128 patch vectors
    kept = memory.patches
    vectors = features.permute(0, 2, 3, 1).reshape(-1, 6)
    assert all(bool((vectors == row).all(dim=1).any()) for row in kept)  # real patches of the class
    # A k-center coreset covers the far patches (a random tenth would miss them more often than not).
    assert bool((kept[:, 0] > 10).any())
    assert float(torch.cdist(vectors, kept).min(1).values.max()) < 10


def test_held_out_images_scale_the_memory_and_can_join_it_afterwards() -> None:
    features, held_out = _features(3, seed=6), _features(1, seed=7)
    apart = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    assert apart.set_class(0, features, held_out=held_out) == 48
    together = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    assert together.set_class(0, features, held_out=held_out, keep_held_out=True) == 64
    # The scale is the held-out image's distance to the memory without it, in both.
    scale = float(apart.distances(held_out, torch.zeros(1, dtype=torch.long)).amax())
    assert scale > 0
    assert float(apart.normal_scales[0]) == pytest.approx(scale)
    assert float(together.normal_scales[0]) == pytest.approx(scale)
    # Only the memory that took the held-out image in holds it: it lies at distance 0 there.
    assert float(together.distances(held_out, torch.zeros(1, dtype=torch.long)).amax()) == 0


def test_local_patches_average_each_locations_neighbourhood() -> None:
    features = torch.zeros(1, 1, 3, 3)
    features[0, 0, 1, 1] = 9.0
    local = ClassPatchMemory(aggregation=3).local_patches(features)
    assert float(local[0, 0, 1, 1]) == pytest.approx(1.0)  # 9 over the 9 neighbours
    assert float(local[0, 0, 0, 0]) == pytest.approx(1.0)  # a corner: the padding counts (PatchCore's pooling)
    assert torch.equal(ClassPatchMemory(aggregation=1).local_patches(features), features)


def test_per_layer_aggregation_averages_a_coarse_map_over_its_own_neighbourhood() -> None:
    fine, coarse = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)
    coarse[0, 0, 1, 1] = 1.0  # one hot stride-16 cell; the memory's grid is at stride 8
    per_layer = ClassPatchMemory(per_layer=True)
    features = per_layer.patch_features([fine, coarse], (8, 8))
    assert features.shape == (1, 2, 8, 8)
    assert torch.equal(per_layer.local_patches(features), features)  # averaged once, before joining
    # PatchCore's order: the 3 x 3 coarse cells around the hot one (24 px at stride 8 from its centre) all see it.
    expected = torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(coarse, 3, stride=1, padding=1), size=(8, 8), mode="bilinear"
    )
    assert torch.allclose(features[:, 1:], expected)
    joined = ClassPatchMemory(per_layer=False)
    local = joined.local_patches(joined.patch_features([fine, coarse], (8, 8)))
    # Averaged on the fine grid instead: the hot cell reaches fewer locations.
    assert int((features[0, 1] > 1e-6).sum()) > int((local[0, 1] > 1e-6).sum())


def test_removing_classes_and_loading_a_saved_memory() -> None:
    memory = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    memory.set_class(1, _features(2, seed=1))
    memory.set_class(2, _features(1, seed=2))
    memory.remove_class(1)  # class 2 moves up to index 1
    assert memory.sizes(2) == [0, 16]
    assert memory.patches.shape == (16, 6)
    loaded = ClassPatchMemory(sampling_ratio=1.0, aggregation=1)
    loaded.load_state_dict(memory.state_dict())
    assert torch.equal(loaded.patches, memory.patches)
    assert loaded.sizes(2) == [0, 16]
    memory.remove_class(1)
    assert memory.patches.shape[0] == 0


def test_a_class_memory_does_not_depend_on_the_global_random_state() -> None:
    memories = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        memory = ClassPatchMemory(sampling_ratio=0.25, aggregation=1)
        memory.set_class(0, _features(8, seed=3))
        memories.append(memory.patches)
    assert torch.equal(*memories)
