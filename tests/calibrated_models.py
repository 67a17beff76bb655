# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Small, randomly initialised, calibrated models whose retrieval has a clear answer (export and INT8 tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_pnpt import OneNip, Pnpt

MODELS = {
    "Pnpt": (
        Pnpt,
        {"hidden_dim": 32, "num_semantic_tokens": 4, "num_heads": 4, "num_layers": 1},
    ),
    "OneNip": (
        OneNip,
        {"hidden_dim": 32, "num_heads": 4, "num_encoder_layers": 1, "num_decoder_layers": 1, "ffn_dim": 64},
    ),
}


def class_images(class_ids: list[int], seed: int = 0) -> torch.Tensor:
    """Noisy 128 px images whose dominant colour channel is their class, so that retrieval has a clear answer."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.rand(len(class_ids), 3, 128, 128, generator=generator)
    for index, class_id in enumerate(class_ids):
        images[index, class_id] += 0.7
    return images


def calibrated_model(name: str, **overrides: object) -> torch.nn.Module:
    """The named model on random Lite0 weights with a three-class pool and per-class calibration, in eval mode.

    ``overrides`` are more constructor arguments of the model.
    """
    torch.manual_seed(0)
    cls, arguments = MODELS[name]
    model = cls(backbone="tf_efficientnet_lite0", pre_trained=False, image_size=128, **arguments, **overrides)
    images = model.pre_processor.transform(class_images([0, 1, 2, 0, 1, 2]))
    model.build_prompt_pool([(images, torch.tensor([0, 1, 2, 0, 1, 2]), list("abcdef"))], num_classes=3)
    model.prompt_categories = ["a", "b", "c"]
    model.trained_categories = ["a", "b", "c"]  # as training's pool building records them
    model.eval()
    # Calibrate the per-class post-processor (as validation would) at the median, so that the exported
    # graph's per-class normalisation and thresholding produce both labels.
    with torch.no_grad():
        raw, class_ids, similarity = model.model.predict(images)
    model.post_processor.image_quantile = model.post_processor.pixel_quantile = 0.5
    model.post_processor.set_statistics(
        class_ids, raw.pred_score, raw.anomaly_map, num_classes=3, similarity=similarity
    )
    return model


def brute_force_memory_distance(net: torch.nn.Module, images: torch.Tensor, class_id: int) -> torch.Tensor:
    """Each location's distance to the nearest memory patch of ``class_id`` by exhaustive search, ``(B, 1, h, w)``.

    ``net`` is a network with a trained-class patch memory (:class:`~anomalib_pnpt.memory_fusion.MemoryFusedNetwork`).
    """
    local = net.class_memory.local_patches(net.memory_features(images))
    rows = net.class_memory.patches[net.class_memory.patch_classes == class_id]
    vectors = local.permute(0, 2, 3, 1).reshape(-1, local.shape[1])
    nearest = torch.cdist(vectors, rows, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    return nearest.reshape(local.shape[0], *local.shape[2:]).unsqueeze(1)


def assert_held_out_images_joined_the_memory(held_apart: torch.nn.Module, all_images: torch.nn.Module) -> None:
    """``all_images`` (``memory_all_images=True``) holds both images of each class, scaled as ``held_apart`` is.

    Both are :func:`calibrated_model` s of the same kind with a fused memory at sampling ratio 1, ``held_apart`` with
    every class's first image held out of its memory.
    """
    net = all_images.model
    assert net.class_memory.sizes(3) == [512, 512, 512]  # both images of each class (sampling ratio 1)
    scales = held_apart.model.class_memory.normal_scales
    assert torch.allclose(net.class_memory.normal_scales, scales)  # measured before they joined
    images = held_apart.pre_processor.transform(class_images([0, 1, 2]))
    with torch.no_grad():
        for class_id in range(3):  # the held-out image is in the memory now
            distance = brute_force_memory_distance(net, images[class_id : class_id + 1], class_id)
            assert float(distance.amax()) == pytest.approx(0.0, abs=1e-4)


def assert_the_score_takes_its_own_memory_weight(
    fused: torch.nn.Module, score_from_memory: torch.nn.Module, memory_alone: torch.nn.Module
) -> None:
    """``score_from_memory`` (``memory_score_weight`` 1) maps as ``fused`` and scores as ``memory_alone`` (w 1).

    The three are the same model but for those settings, their memories built from the same images.
    """
    images = fused.pre_processor.transform(class_images([0, 1, 2], seed=3))
    with torch.no_grad():
        plain, split, memory = (model.model.predict(images)[0] for model in (fused, score_from_memory, memory_alone))
    assert torch.allclose(split.anomaly_map, plain.anomaly_map)
    assert not torch.allclose(split.anomaly_map, memory.anomaly_map)
    assert torch.allclose(split.pred_score, memory.pred_score)
    assert not torch.allclose(split.pred_score, plain.pred_score)


def assert_openvino_export_scores_as_torch(model: torch.nn.Module, images: torch.Tensor, folder: Path) -> None:
    """Export ``model`` to OpenVINO (FP32) and check that it gives the torch model's score for every image."""
    from anomalib.engine import Engine

    from anomalib_pnpt.deploy import MultiClassOpenVINOInferencer

    path = Engine(default_root_dir=folder).export(
        model, export_type="openvino", export_root=folder, input_size=tuple(images.shape[-2:])
    )
    inferencer = MultiClassOpenVINOInferencer(path, config={"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        expected = model(images)
    for index, image in enumerate(images):
        prediction = inferencer.predict(image.permute(1, 2, 0).numpy())
        score = float(np.asarray(prediction.pred_score).reshape(-1)[0])
        assert score == pytest.approx(float(expected.pred_score[index]), abs=1e-4)
