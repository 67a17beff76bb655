# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""NetworkWithMemory: each trained class's patch memory fused into a network's map, on the network's scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_pnpt import NetworkWithMemory
from tests.calibrated_models import (
    MODELS,
    assert_openvino_export_scores_as_torch,
    brute_force_memory_distance,
    calibrated_memory_model,
    class_images,
)

# Lite0 stages 1 and 2 (strides 4 and 8; 24 + 40 channels) for OneNIP, whose layers are stages 0-3; stages 2 and 3
# (40 + 112) for PNPT, whose layers are 1-3. Sampling ratio 1: a memory holds every patch of its images.
SETTINGS = {
    "OneNip": {"memory_layers": [1, 2], "sampling_ratio": 1.0, "map_weight": 0.5, "score_weight": 0.5},
    "Pnpt": {"memory_layers": [2, 3], "sampling_ratio": 1.0, "map_weight": 0.5, "score_weight": 0.5},
}
CHANNELS = {"OneNip": 24 + 40, "Pnpt": 40 + 112}


def _model(network: str, **overrides: object) -> NetworkWithMemory:
    model = calibrated_memory_model(network, **{"all_images": False, **SETTINGS[network], **overrides})
    model.memory.network_scale.fill_(0.7)  # as calibration on training images would set it
    return model


@pytest.mark.parametrize("network", sorted(MODELS))
def test_every_trained_class_gets_a_memory_with_held_out_images_to_scale_it(network: str) -> None:
    model = _model(network)
    memory = model.memory.class_memory
    # The pool was built from 10 images per class (16 x 16 patches at stride 8): the first is held out, 9 are kept.
    assert memory.sizes(3) == [9 * 256] * 3
    assert memory.patches.shape[1] == CHANNELS[network]
    images = model.pre_processor.transform(class_images([0, 1, 2, 0, 1, 2]))
    with torch.no_grad():
        for class_id in range(3):  # the class's first image was held out: its largest distance is the scale
            largest = float(brute_force_memory_distance(model, images[class_id : class_id + 1], class_id).amax())
            assert float(memory.normal_scales[class_id]) == pytest.approx(largest, rel=1e-5)
            kept = images[class_id + 3 : class_id + 4]
            assert float(brute_force_memory_distance(model, kept, class_id).amax()) == pytest.approx(0.0, abs=1e-4)


def test_all_images_takes_the_held_out_images_in_once_they_have_scaled_it() -> None:
    held_apart, joined = _model("OneNip"), _model("OneNip", all_images=True)
    memory = joined.memory.class_memory
    assert memory.sizes(3) == [10 * 256] * 3  # every image of each class (sampling ratio 1)
    assert torch.allclose(memory.normal_scales, held_apart.memory.class_memory.normal_scales)
    images = joined.pre_processor.transform(class_images([0, 1, 2]))
    with torch.no_grad():
        for class_id in range(3):
            distance = brute_force_memory_distance(joined, images[class_id : class_id + 1], class_id)
            assert float(distance.amax()) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("network", sorted(MODELS))
def test_the_map_and_the_score_are_weighted_sums_of_the_network_and_the_scaled_memory(network: str) -> None:
    model = _model(network, score_weight=1.0)
    images = model.pre_processor.transform(class_images([0, 1, 2], seed=3))
    with torch.no_grad():
        fused = model.predict_images(images)
        alone = model.model.predict(images)  # the network alone
        distances = torch.cat([brute_force_memory_distance(model, images[i : i + 1], i) for i in range(3)])
    assert fused.class_id.tolist() == [0, 1, 2]
    memory_map = torch.nn.functional.interpolate(distances, size=(128, 128), mode="bilinear", align_corners=False)
    scaled = 0.7 / model.memory.class_memory.normal_scales.view(-1, 1, 1, 1) * memory_map
    assert torch.allclose(fused.anomaly_map, 0.5 * alone.anomaly_map + 0.5 * scaled, atol=1e-4)
    # score_weight 1: the image is scored by the memory alone, on the network's rule from a map to a score
    assert torch.allclose(fused.pred_score, model.model.anomaly_map_generator.image_score(scaled), atol=1e-4)
    assert torch.equal(fused.class_similarity, alone.class_similarity)


def test_the_memory_survives_a_checkpoint_and_a_model_without_it_says_so() -> None:
    model = _model("OneNip")
    images = model.pre_processor.transform(class_images([0, 1, 2], seed=3))
    loaded = _model("OneNip")
    loaded.memory.class_memory.clear()
    with pytest.raises(RuntimeError, match="patch memory"):
        loaded.predict_images(images)
    loaded.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded.predict_images(images).pred_score, model.predict_images(images).pred_score)


def test_a_checkpoint_records_the_networks_resolved_arguments() -> None:
    network = {"class_path": "anomalib_pnpt.OneNip", "init_args": {"preset": "cpu", "pre_trained": False}}
    model = NetworkWithMemory(network)
    recorded = model.hparams["network"]
    assert recorded["class_path"] == "anomalib_pnpt.OneNip"
    assert recorded["init_args"]["hidden_dim"] == 128  # the cpu preset's, resolved
    rebuilt = NetworkWithMemory(recorded)
    assert type(rebuilt.network) is type(model.network)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_invalid_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="not among the network's layers"):
        _model("OneNip", memory_layers=[4])
    with pytest.raises(ValueError, match="map_weight"):
        _model("OneNip", map_weight=1.5)
    with pytest.raises(ValueError, match="holdout"):
        _model("OneNip", holdout=1)
    with pytest.raises(TypeError, match="prompt-pool model"):
        NetworkWithMemory({"class_path": "anomalib.models.Padim", "init_args": {}})


def test_the_export_holds_the_fused_map(tmp_path: Path) -> None:
    assert_openvino_export_scores_as_torch(_model("OneNip"), class_images([0, 1, 2], seed=4), tmp_path)
