# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PNPT's ``memory_weight``: each trained class's patch memory fused into Eq. 8's map, on the map's normal scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_pnpt import Pnpt
from tests.calibrated_models import (
    MODELS,
    assert_held_out_images_joined_the_memory,
    assert_openvino_export_scores_as_torch,
    assert_the_score_takes_its_own_memory_weight,
    brute_force_memory_distance,
    calibrated_model,
    class_images,
)

FUSED = {"memory_weight": 0.5, "memory_layers": [1, 2], "memory_stride": 8, "memory_sampling_ratio": 1.0}


def _fused_model(**overrides: object) -> Pnpt:
    model = calibrated_model("Pnpt", **{**FUSED, **overrides})
    model.model.anomaly_map_generator.normal_scale.fill_(0.7)  # as calibration on training images would set it
    return model


def test_the_pool_gives_every_trained_class_a_memory_with_held_out_images_to_scale_it() -> None:
    net = _fused_model().model
    # Two 128 px images per class, 16 x 16 patches at stride 8: one held out of the memory, one all of it.
    assert net.class_memory.sizes(3) == [256, 256, 256]
    assert net.class_memory.patches.shape[1] == 40 + 112  # positions 1, 2 of layers (1, 2, 3): Lite0 strides 8, 16
    assert (net.class_memory.normal_scales > 0).all()


def test_memory_all_images_takes_the_held_out_images_in_once_they_have_scaled_it() -> None:
    assert_held_out_images_joined_the_memory(_fused_model(), _fused_model(memory_all_images=True))


@pytest.mark.parametrize("memory_aggregation", ["joined", "per_layer"])
def test_the_map_is_eq8_plus_the_smoothed_memory_on_the_maps_normal_scale(memory_aggregation: str) -> None:
    model = _fused_model(memory_aggregation=memory_aggregation)
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
        memory_map = torch.nn.functional.interpolate(distances, size=(128, 128), mode="bilinear")
        smoothed = net.anomaly_map_generator.blur(memory_map)
    assert class_ids.tolist() == [0, 1, 2]
    scale = 0.7 / net.class_memory.normal_scales[class_ids].view(-1, 1, 1, 1)
    expected = 0.5 * network.anomaly_map + 0.5 * scale * smoothed
    assert torch.allclose(fused.anomaly_map, expected, atol=1e-4)
    assert torch.allclose(fused.pred_score, expected.flatten(1).amax(1), atol=1e-4)
    assert not torch.allclose(fused.pred_score, network.pred_score)


def test_the_image_score_may_take_its_own_memory_weight() -> None:
    assert_the_score_takes_its_own_memory_weight(
        _fused_model(), _fused_model(memory_score_weight=1.0), _fused_model(memory_weight=1.0)
    )


def test_the_normal_scale_is_the_largest_eq8_value_on_normal_training_images() -> None:
    model = _fused_model()
    images = [model.pre_processor.transform(class_images([0, 1, 2], seed=s)) for s in (5, 6)]
    with torch.no_grad():
        largest = max(float(model.model.network_map(batch).amax()) for batch in images)
        assert model.calibrate_normal_scale([(batch,) for batch in images]) == pytest.approx(largest)
    assert float(model.model.anomaly_map_generator.normal_scale) == pytest.approx(largest)
    assert model.needs_normal_scale()
    assert not calibrated_model("Pnpt").needs_normal_scale()  # nothing is added to Eq. 8's map


def test_the_scale_is_measured_when_training_ends(demo_root: Path, tmp_path: Path) -> None:
    from anomalib.engine import Engine

    from anomalib_pnpt.data import MultiClassMVTecAD

    datamodule = MultiClassMVTecAD(root=demo_root, train_batch_size=4, eval_batch_size=4, num_workers=0)
    model = Pnpt(backbone="tf_efficientnet_lite0", pre_trained=False, image_size=64, **MODELS["Pnpt"][1], **FUSED)
    Engine(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False).fit(model, datamodule)
    scale = float(model.model.anomaly_map_generator.normal_scale)
    assert scale != 1.0
    assert model.calibrate_normal_scale_from(datamodule) == pytest.approx(scale, rel=1e-5)
    assert all(size > 0 for size in model.model.class_memory.sizes(len(model.prompt_categories)))


def test_an_added_class_gets_its_memory_too() -> None:
    model = _fused_model()
    model.add_class("grey", torch.full((10, 3, 128, 128), 0.5) + 0.05 * torch.rand(10, 3, 128, 128))
    assert model.model.class_memory.sizes(4)[3] > 0
    with torch.no_grad():
        output = model.model.predict(model.pre_processor.transform(class_images([0, 1, 2], seed=3)))[0]
    assert torch.isfinite(output.pred_score).all()


def test_the_export_holds_the_fused_map(tmp_path: Path) -> None:
    assert_openvino_export_scores_as_torch(_fused_model(), class_images([0, 1, 2], seed=4), tmp_path)


def test_under_ddp_each_rank_builds_every_class_memory_from_all_its_images() -> None:
    # The CS-NPP alone is a sum over images each rank adds its share to; a memory needs all of a class's images.
    assert calibrated_model("Pnpt").prompt_pool_splits_across_ranks
    assert not _fused_model().prompt_pool_splits_across_ranks
