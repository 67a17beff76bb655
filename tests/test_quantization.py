# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""INT8 quantisation touches the backbone only and keeps what the exported model predicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from anomalib_pnpt.deploy import read_model
from anomalib_pnpt.quantization import (
    operations_after_feature_extractor,
    quantize_feature_extractor,
    quantize_with_datamodule,
)
from tests.calibrated_models import class_images

openvino = pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def exported(openvino_export: Callable[[str], tuple[torch.nn.Module, Path]]) -> tuple[torch.nn.Module, Path]:
    """A small calibrated PNPT and its FP32 OpenVINO export (shared with the export tests)."""
    return openvino_export("Pnpt")


def test_scope_keeps_the_transformer_and_frees_the_backbone(exported: tuple[torch.nn.Module, Path]) -> None:
    """Every matrix product and the anomaly-map arithmetic stay out; the backbone's convolutions stay in."""
    _, path = exported
    graph = openvino.Core().read_model(str(path))
    kept = set(operations_after_feature_extractor(graph))
    by_type: dict[str, list[str]] = {}
    for operation in graph.get_ordered_ops():
        by_type.setdefault(operation.get_type_name(), []).append(operation.get_friendly_name())
    assert set(by_type["MatMul"]) <= kept
    free_convolutions = [name for name in by_type["Convolution"] if name not in kept]
    assert len(free_convolutions) > 10  # EfficientNet-Lite0's stem and blocks


def test_quantised_model_keeps_the_retrieved_class(exported: tuple[torch.nn.Module, Path]) -> None:
    """Quantisers sit only before the transformer and the quantised graph retrieves the same classes.

    Scores are not compared by tolerance here: random weights give a meaninglessly narrow calibrated range.
    The metric drop on real data is measured by ``benchmarks/deployment.py``.
    """
    model, path = exported
    core = openvino.Core()
    graph = read_model(path, core)
    calibration = [class_images([0, 1, 2], seed=seed).numpy() for seed in range(4)]
    quantised = quantize_feature_extractor(graph, calibration)
    operations = quantised.get_ordered_ops()
    assert any(operation.get_type_name() == "FakeQuantize" for operation in operations)
    kept = set(operations_after_feature_extractor(graph))
    for operation in operations:  # no quantiser feeds an operation that must stay in floating point
        if operation.get_type_name() == "FakeQuantize":
            consumers = {i.get_node().get_friendly_name() for o in operation.outputs() for i in o.get_target_inputs()}
            assert not consumers & kept
    images = class_images([0, 1, 2, 1], seed=9)
    with torch.no_grad():
        expected = model(images)
    outputs = {
        key.get_any_name(): value
        for key, value in core.compile_model(quantised, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(
            images.numpy()
        ).items()
    }
    assert outputs["pred_category_id"].reshape(-1).tolist() == expected.pred_category_id.tolist()
    assert np.isfinite(outputs["anomaly_map"]).all()
    assert outputs["anomaly_map"].shape == tuple(expected.anomaly_map.shape)


class _ValidationLoader(list):
    """Validation batches with the ``dataset`` length anomalib's loaders expose."""

    dataset = range(6)


class _ValidationImages:
    """The part of an anomalib datamodule that INT8 calibration reads: normal validation batches."""

    def __init__(self, size: int) -> None:
        self.batches = _ValidationLoader(
            SimpleNamespace(image=class_images([0, 1, 2], seed=seed)[..., :size, :size]) for seed in (1, 2)
        )

    def setup(self, stage: str) -> None:
        del stage

    def val_dataloader(self) -> _ValidationLoader:
        return self.batches


def test_datamodule_images_are_resized_to_the_exported_input(exported: tuple[torch.nn.Module, Path]) -> None:
    """Calibration batches loaded at another size than the export's input are resized, not rejected."""
    _, path = exported
    graph = openvino.Core().read_model(str(path))
    datamodule = _ValidationImages(size=96)  # the export takes 128 x 128
    with pytest.raises(ValueError, match="Datamodule"):
        quantize_with_datamodule(graph, None)
    quantised = quantize_with_datamodule(graph, datamodule)
    assert any(operation.get_type_name() == "FakeQuantize" for operation in quantised.get_ordered_ops())
