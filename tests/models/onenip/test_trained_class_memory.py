# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's ``memory_weight``: each trained class's patch memory fused into the network's map, on one scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_pnpt import OneNip
from tests.calibrated_models import (
    assert_held_out_images_joined_the_memory,
    assert_openvino_export_scores_as_torch,
    assert_the_score_takes_its_own_memory_weight,
    brute_force_memory_distance,
    calibrated_model,
    class_images,
)

FUSED = {"memory_weight": 0.5, "memory_layers": [1, 2], "memory_stride": 8, "memory_sampling_ratio": 1.0}


def _fused_model(memory_aggregation: str = "joined", **overrides: object) -> OneNip:
    model = calibrated_model("OneNip", **{**FUSED, **overrides}, memory_aggregation=memory_aggregation)
    model.model.anomaly_map_generator.refiner_scale.fill_(0.7)  # as calibration on training images would set it
    return model


def test_every_trained_class_gets_a_memory_with_held_out_images_to_scale_it() -> None:
    net = _fused_model().model
    # The pool was built from 2 images per class (8 x 8 patches at stride 16, 16 x 16 at 8); one of each class is
    # held out of its memory, the other one is all of it (sampling ratio 1).
    assert net.class_memory.sizes(3) == [256, 256, 256]
    assert net.class_memory.patches.shape[1] == 24 + 40  # Lite0 stages at positions 1 and 2 of layers (strides 4, 8)
    assert (net.class_memory.normal_scales > 0).all()  # a held-out image is not in the memory: it has a distance


def test_memory_all_images_takes_the_held_out_images_in_once_they_have_scaled_it() -> None:
    all_images = calibrated_model("OneNip", **FUSED, memory_all_images=True)
    assert_held_out_images_joined_the_memory(_fused_model(), all_images)


def test_the_normal_scale_is_the_largest_distance_of_the_held_out_images() -> None:
    model = _fused_model()
    net = model.model
    images = model.pre_processor.transform(class_images([0, 1, 2, 0, 1, 2]))
    with torch.no_grad():
        for class_id in range(3):
            held_out = images[class_id : class_id + 1]  # every memory_holdout-th image of the class: its first
            largest = float(brute_force_memory_distance(net, held_out, class_id).amax())
            assert float(net.class_memory.normal_scales[class_id]) == pytest.approx(largest, rel=1e-5)
            kept = images[class_id + 3 : class_id + 4]
            assert float(brute_force_memory_distance(net, kept, class_id).amax()) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("memory_aggregation", ["joined", "per_layer"])
def test_the_map_is_the_weighted_sum_of_the_network_and_the_scaled_memory(memory_aggregation: str) -> None:
    model = _fused_model(memory_aggregation)
    net = model.model
    images = model.pre_processor.transform(class_images([0, 1, 2], seed=3))
    with torch.no_grad():
        fused, class_ids, _ = net.predict(images)
        net.memory_weight = 0.0
        network, _, _ = net.predict(images)
        net.memory_weight = FUSED["memory_weight"]
        distances = torch.cat(
            [brute_force_memory_distance(net, images[i : i + 1], int(c)) for i, c in enumerate(class_ids)]
        )
    assert class_ids.tolist() == [0, 1, 2]
    memory_map = torch.nn.functional.interpolate(distances, size=(128, 128), mode="bilinear", align_corners=False)
    scale = 0.7 / net.class_memory.normal_scales[class_ids].view(-1, 1, 1, 1)
    expected = 0.5 * network.anomaly_map + 0.5 * scale * memory_map
    assert torch.allclose(fused.anomaly_map, expected, atol=1e-4)
    assert torch.allclose(fused.pred_score, net.anomaly_map_generator.image_score(expected), atol=1e-4)
    assert not torch.allclose(fused.pred_score, network.pred_score)


def test_the_image_score_may_take_its_own_memory_weight() -> None:
    assert_the_score_takes_its_own_memory_weight(
        _fused_model(), _fused_model(memory_score_weight=1.0), _fused_model(memory_weight=1.0)
    )


def test_the_memory_survives_a_checkpoint_and_a_model_without_it_says_how_to_build_it() -> None:
    model = _fused_model()
    images = model.pre_processor.transform(class_images([0, 1, 2], seed=3))
    loaded = calibrated_model("OneNip", **FUSED)
    loaded.model.class_memory.clear()
    with pytest.raises(RuntimeError, match="fill_class_memory"):
        loaded.model.predict(images)
    loaded.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded.model.predict(images)[0].pred_score, model.model.predict(images)[0].pred_score)


def test_invalid_memory_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="memory_layers"):
        calibrated_model("OneNip", memory_layers=[4])
    with pytest.raises(ValueError, match="memory_stride"):
        calibrated_model("OneNip", memory_stride=24)
    with pytest.raises(ValueError, match="memory_weight"):
        calibrated_model("OneNip", memory_weight=1.5)
    with pytest.raises(ValueError, match="memory_score_weight"):
        calibrated_model("OneNip", memory_weight=0.5, memory_score_weight=1.5)
    with pytest.raises(ValueError, match="memory_score_weight > 0 needs memory_weight > 0"):
        calibrated_model("OneNip", memory_score_weight=1.0)
    with pytest.raises(ValueError, match="memory_aggregation"):
        calibrated_model("OneNip", memory_aggregation="mean")


@pytest.mark.parametrize("memory_aggregation", ["joined", "per_layer"])
def test_the_export_holds_the_fused_map(tmp_path: Path, memory_aggregation: str) -> None:
    assert_openvino_export_scores_as_torch(_fused_model(memory_aggregation), class_images([0, 1, 2], seed=4), tmp_path)
