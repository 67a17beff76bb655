# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Small, randomly initialised, calibrated models whose retrieval has a clear answer (export and INT8 tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_pnpt import NetworkWithMemory, OneNip, Pnpt

MODELS = {
    "Pnpt": (Pnpt, {"hidden_dim": 32, "num_layers": 1}),
    "OneNip": (OneNip, {"hidden_dim": 32, "num_encoder_layers": 1, "num_decoder_layers": 1}),
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
    return _calibrated(model)


def calibrated_memory_model(network: str, **overrides: object) -> NetworkWithMemory:
    """:func:`calibrated_model`'s ``network`` fused with a patch memory (``overrides``: ``NetworkWithMemory``'s)."""
    torch.manual_seed(0)
    cls, arguments = MODELS[network]
    init_args = {"backbone": "tf_efficientnet_lite0", "pre_trained": False, "image_size": 128, **arguments}
    network_config = {"class_path": f"anomalib_pnpt.{cls.__name__}", "init_args": init_args}
    return _calibrated(NetworkWithMemory(network_config, **overrides))


def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    # Ten images per class: the unknown-class bound is the least similarity of a training image to its nearest
    # other one; with a few images per class a fresh normal image falls below it too often (~1 in N + 1).
    class_ids = [0, 1, 2] * 10
    images = model.pre_processor.transform(class_images(class_ids))
    model.build_prompt_pool([(images, torch.tensor(class_ids), [f"{i}.png" for i in range(30)])], num_classes=3)
    model.prompt_categories = ["a", "b", "c"]
    model.trained_categories = ["a", "b", "c"]  # as training's pool building records them
    model.eval()
    # Calibrate the per-class post-processor (as validation would) at the median, so that the exported
    # graph's per-class normalisation and thresholding produce both labels.
    with torch.no_grad():
        raw = model.predict_images(images)
    model.post_processor.image_quantile = model.post_processor.pixel_quantile = 0.5
    model.post_processor.set_statistics(raw.class_id, raw.pred_score, raw.anomaly_map, num_classes=3)
    return model


def brute_force_memory_distance(model: NetworkWithMemory, images: torch.Tensor, class_id: int) -> torch.Tensor:
    """Each location's distance to the nearest memory patch of ``class_id`` by exhaustive search, ``(B, 1, h, w)``."""
    memory = model.memory.class_memory
    local = memory.local_patches(model.memory_features(images))
    rows = memory.patches[memory.patch_classes == class_id]
    vectors = local.permute(0, 2, 3, 1).reshape(-1, local.shape[1])
    nearest = torch.cdist(vectors, rows, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    return nearest.reshape(local.shape[0], *local.shape[2:]).unsqueeze(1)


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
