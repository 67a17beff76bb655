# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Both models export through anomalib's own path (ONNX and OpenVINO) with the prompt pool inside the graph.

Parity with torch is checked with OpenVINO in FP32 on two batch sizes (the batch is not frozen into the
graph). Models are small and randomly initialised: this checks the graph, not detection quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine

from anomalib_pnpt import OneNip, Pnpt

openvino = pytest.importorskip("openvino")

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


def _built_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cls, arguments = MODELS[name]
    model = cls(backbone="tf_efficientnet_lite0", pre_trained=False, image_size=128, **arguments)
    images = model.pre_processor.transform(torch.rand(6, 3, 128, 128))
    model.build_prompt_pool([(images, torch.tensor([0, 1, 2, 0, 1, 2]), list("abcdef"))], num_classes=3)
    model.eval()
    # Give the post-processor normalisation statistics (as validation would), so that the exported graph's
    # normalisation and thresholding are exercised too.
    with torch.no_grad():
        raw = model.model(images)
    scores, maps = raw.pred_score, raw.anomaly_map
    model.post_processor.load_state_dict(
        {
            "_image_threshold": scores.median(),
            "_pixel_threshold": maps.median(),
            "image_min": scores.min(),
            "image_max": scores.max(),
            "pixel_min": maps.min(),
            "pixel_max": maps.max(),
        }
    )
    return model


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("export_type", ["onnx", "openvino"])
def test_export_matches_torch(name: str, export_type: str, tmp_path: Path) -> None:
    model = _built_model(name)
    path = Engine(default_root_dir=tmp_path).export(
        model, export_type=export_type, export_root=tmp_path, input_size=(128, 128)
    )
    assert path is not None and Path(path).is_file()
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch in (1, 3):  # the batch size is not frozen into the graph
        images = torch.rand(batch, 3, 128, 128)
        with torch.no_grad():
            expected = model(images)
        outputs = {key.get_any_name(): value for key, value in compiled(images.numpy()).items()}
        assert np.isfinite(outputs["anomaly_map"]).all() and outputs["anomaly_map"].std() > 1e-3
        assert set(np.unique(outputs["pred_mask"])) <= {0, 1}
        np.testing.assert_allclose(
            outputs["pred_score"].reshape(-1), expected.pred_score.numpy().reshape(-1), atol=1e-4
        )
        np.testing.assert_allclose(
            outputs["anomaly_map"].reshape(batch, -1), expected.anomaly_map.numpy().reshape(batch, -1), atol=1e-3
        )
