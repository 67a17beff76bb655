# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Both models export through anomalib's own path (ONNX and OpenVINO) with the prompt pool inside the graph.

Parity with torch is checked with OpenVINO in FP32 on two batch sizes (the batch is not frozen into the
graph): same retrieved class, scores within 1e-4, maps within 1e-3 after the per-class normalisation.
Models are small and randomly initialised: this checks the graph, not detection quality (the FP16/INT8
metric drop is measured in ``benchmarks/deployment.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine

from anomalib_pnpt.deploy import MultiClassOpenVINOInferencer, main, read_model
from tests.calibrated_models import MODELS, calibrated_model, class_images

openvino = pytest.importorskip("openvino")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("export_type", ["onnx", "openvino"])
def test_export_matches_torch(
    name: str, export_type: str, tmp_path: Path, openvino_export: Callable[[str], tuple[torch.nn.Module, Path]]
) -> None:
    if export_type == "openvino":
        model, path = openvino_export(name)
    else:
        model = calibrated_model(name)
        path = Engine(default_root_dir=tmp_path).export(
            model, export_type=export_type, export_root=tmp_path, input_size=(128, 128)
        )
    assert path is not None and Path(path).is_file()
    core = openvino.Core()
    compiled = core.compile_model(read_model(path, core), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch in (1, 3):  # the batch size is not frozen into the graph
        images = class_images([2, 0, 1][:batch], seed=batch)
        with torch.no_grad():
            expected = model(images)
        outputs = {key.get_any_name(): value for key, value in compiled(images.numpy()).items()}
        assert np.isfinite(outputs["anomaly_map"]).all() and outputs["anomaly_map"].std() > 1e-3
        assert set(np.unique(outputs["pred_mask"])) <= {0, 1}
        np.testing.assert_array_equal(outputs["pred_category_id"].reshape(-1), expected.pred_category_id.numpy())
        np.testing.assert_allclose(
            outputs["pred_score"].reshape(-1), expected.pred_score.numpy().reshape(-1), atol=1e-4
        )
        np.testing.assert_allclose(
            outputs["anomaly_map"].reshape(batch, -1), expected.anomaly_map.numpy().reshape(batch, -1), atol=1e-3
        )


@pytest.mark.parametrize("export_type", ["torch", "onnx"])
def test_every_export_writes_the_class_names_beside_the_model(export_type: str, tmp_path: Path) -> None:
    model = calibrated_model("Pnpt")
    path = Engine(default_root_dir=tmp_path).export(
        model, export_type=export_type, export_root=tmp_path, input_size=(128, 128)
    )
    assert json.loads((Path(path).parent / "categories.json").read_text()) == list(model.prompt_categories)
    assert len(model.prompt_categories) > 1


@pytest.mark.parametrize("name", list(MODELS))
def test_openvino_inferencer_predicts_a_file_with_its_class(
    name: str, tmp_path: Path, openvino_export: Callable[[str], tuple[torch.nn.Module, Path]]
) -> None:
    """The exported model runs on a raw image file: score, label, map, mask, class index and name."""
    from PIL import Image

    _, path = openvino_export(name)
    image = np.random.default_rng(0).integers(0, 255, (160, 200, 3), dtype=np.uint8)  # not the input size
    Image.fromarray(image).save(tmp_path / "part.png")
    prediction = MultiClassOpenVINOInferencer(path, config={"INFERENCE_PRECISION_HINT": "f32"}).predict(
        tmp_path / "part.png"
    )
    assert prediction.anomaly_map.shape[-2:] == (128, 128)
    assert prediction.pred_mask.squeeze().shape == (128, 128)  # anomalib's numpy batch stores masks (B, H, W, 1)
    assert prediction.pred_score.shape == (1,) and prediction.pred_label.shape == (1,)
    assert prediction.pred_category == [["a", "b", "c"][int(prediction.pred_category_id[0])]]
    main(["--model", str(path), "--image", str(tmp_path / "part.png"), "--output", str(tmp_path / "overlay.png")])
    width, height = Image.open(tmp_path / "overlay.png").size
    assert width == 200 and height > 160  # the image's own size, plus the caption strip below it


@pytest.mark.parametrize("compression", ["fp16", "int8"])
def test_compressed_openvino_exports_run(compression: str, tmp_path: Path) -> None:
    """FP16 and INT8 (weight compression) exports load and retrieve the right class."""
    model = calibrated_model("Pnpt")
    path = Engine(default_root_dir=tmp_path).export(
        model, export_type="openvino", export_root=tmp_path, input_size=(128, 128), compression_type=compression
    )
    images = class_images([0, 1, 2, 1], seed=5)
    with torch.no_grad():
        expected = model(images)
    assert expected.pred_category_id.tolist() == [0, 1, 2, 1]
    core = openvino.Core()
    compiled = core.compile_model(read_model(path, core), "CPU")
    outputs = {key.get_any_name(): value for key, value in compiled(images.numpy()).items()}
    assert np.isfinite(outputs["anomaly_map"]).all()
    assert outputs["anomaly_map"].shape == tuple(expected.anomaly_map.shape)
    assert outputs["pred_category_id"].reshape(-1).tolist() == [0, 1, 2, 1]


@pytest.mark.parametrize("name", list(MODELS))
def test_anomalibs_stock_inferencers_run_our_exports_with_per_class_calibration(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openvino_export: Callable[[str], tuple[torch.nn.Module, Path]],
) -> None:
    """anomalib's own OpenVINOInferencer and TorchInferencer, as its docs use them, give the model's answer.

    The calibration is per class (thresholds differ between classes), so equal labels mean the stock
    inferencers applied the retrieved class's calibration; ours also returns that class.
    """
    from anomalib.deploy import OpenVINOInferencer, TorchInferencer

    model, path = openvino_export(name)
    # Not the calibration images: one of them sits exactly on its class's threshold (normalised score 0.5),
    # where float noise between runtimes decides the label.
    images = class_images([0, 1, 2, 0, 1, 2, 0, 1, 2], seed=4)
    with torch.no_grad():
        expected = model(images)
    assert len(set(expected.pred_label.tolist())) == 2  # both verdicts occur: the comparison is not trivial
    assert ((expected.pred_score - 0.5).abs() > 0.01).all()  # and none is decided by float noise
    torch_path = Engine(default_root_dir=tmp_path).export(model, export_type="torch", export_root=tmp_path)
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")  # anomalib's documented switch for pickled torch exports
    stock_openvino = OpenVINOInferencer(path, config={"INFERENCE_PRECISION_HINT": "f32"})
    stock_torch = TorchInferencer(torch_path, device="cpu")
    ours = MultiClassOpenVINOInferencer(path, config={"INFERENCE_PRECISION_HINT": "f32"})
    for index, image in enumerate(images):
        array = image.permute(1, 2, 0).numpy()  # (H, W, 3) in [0, 1], as a user passes it
        for prediction in (stock_openvino.predict(array), stock_torch.predict(image), ours.predict(array)):
            assert bool(np.asarray(prediction.pred_label).reshape(-1)[0]) == bool(expected.pred_label[index])
            np.testing.assert_allclose(
                np.asarray(prediction.pred_score).reshape(-1)[0], float(expected.pred_score[index]), atol=1e-4
            )
            np.testing.assert_allclose(
                np.asarray(prediction.anomaly_map).reshape(-1),
                expected.anomaly_map[index].numpy().reshape(-1),
                atol=1e-3,
            )
            # Masks agree except where the map is within float tolerance of the normalised threshold (0.5).
            mask = np.asarray(prediction.pred_mask).reshape(-1).astype(bool)
            differs = mask != expected.pred_mask[index].numpy().reshape(-1)
            near_threshold = np.abs(expected.anomaly_map[index].numpy().reshape(-1) - 0.5) < 1e-3
            assert not (differs & ~near_threshold).any()
        assert int(ours.predict(array).pred_category_id[0]) == int(expected.pred_category_id[index])


def test_int8_ptq_export_quantises_the_backbone_only(tmp_path: Path) -> None:
    """anomalib's ``INT8_PTQ`` through the public ``to_openvino``: the backbone quantised, no matrix product."""
    from tests.test_quantization import _ValidationImages

    model = calibrated_model("Pnpt")
    path = Engine(default_root_dir=tmp_path).export(
        model,
        export_type="openvino",
        export_root=tmp_path,
        input_size=(128, 128),
        compression_type="int8_ptq",
        datamodule=_ValidationImages(size=128),
    )
    # The matrix products (the transformer's, the retrieval's) take no quantised input: they stay float.
    quantized, quantized_products = 0, []
    for operation in openvino.Core().read_model(str(path)).get_ordered_ops():
        inputs = [port.get_source_output().get_node() for port in operation.inputs()]
        quantized += operation.get_type_name() == "FakeQuantize"
        if operation.get_type_name() == "MatMul" and any(node.get_type_name() == "FakeQuantize" for node in inputs):
            quantized_products.append(operation.get_friendly_name())
    assert quantized > 0  # the backbone is quantised
    assert quantized_products == []
    assert (path.parent / "categories.json").is_file()
