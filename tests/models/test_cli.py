# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib train / test / predict / export --model anomalib_pnpt.<Model>`` with each model's CPU config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data.utils import read_image

import anomalib_pnpt
from anomalib_pnpt.prediction_writer import read_predictions

REPO_ROOT = Path(__file__).resolve().parents[2]
ANOMALIB = str(Path(sys.executable).with_name("anomalib"))
JSONL = "predictions.jsonl"
# Per model: its CPU config, arguments that make it tiny, and the config's preset for ``predict`` and ``export``
# (which take the model from the command line, not from the config).
MODELS = {
    "Pnpt": (
        "configs/pnpt_cpu.yaml",
        {"image_size": "128", "hidden_dim": "32", "num_layers": "1"},
        {
            "preset": "cpu",
            "memory_weight": "0.5",
            "memory_layers": "[1,2]",
            "memory_stride": "8",
            "memory_aggregation": "per_layer",
        },
    ),
    "OneNip": (
        "configs/onenip_cpu.yaml",
        # the config's DTD folder may be absent (CI): noise textures
        {
            "image_size": "128",
            "hidden_dim": "32",
            "num_encoder_layers": "1",
            "num_decoder_layers": "1",
            "texture_dir": "null",
        },
        # and the config's patch memory, which changes the map (what the checkpoint holds, not its arguments)
        {
            "preset": "cpu",
            "memory_weight": "0.25",
            "memory_score_weight": "1",
            "memory_layers": "[2,3]",
            "memory_stride": "8",
            "memory_aggregation": "per_layer",
        },
    ),
}


def _run(arguments: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [ANOMALIB, *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_train_test_predict_export_from_checkpoint(name: str, demo_root: Path, tmp_path: Path) -> None:
    config_file, small, fixed = MODELS[name]
    data = ["--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0"]
    small_args = [item for key, value in small.items() for item in (f"--model.init_args.{key}", value)]
    config = ["--config", config_file, *data, *small_args]
    _run(
        [
            "train",
            *config,
            "--trainer.max_epochs",
            "1",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--default_root_dir",
            str(tmp_path / "train"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "logs"),
        ]
    )
    checkpoint = next((tmp_path / "train").rglob("*.ckpt"))
    # The config's CSV logger: a file the user can open during training, with the loss curve in it.
    metrics = next((tmp_path / "logs").rglob("metrics.csv")).read_text().splitlines()
    assert "train_loss" in metrics[0] and len(metrics) > 1

    tested = _run(["test", *config, "--ckpt_path", str(checkpoint), "--default_root_dir", str(tmp_path / "test")])
    assert "retrieval_accuracy" in tested.stdout
    assert next((tmp_path / "test").rglob("per_class_metrics.csv"))

    model_args = [item for key, value in {**fixed, **small}.items() for item in (f"--model.{key}", value)]
    defects = demo_root / "disc" / "test" / "scratch"
    _run(
        [
            "predict",
            "--model",
            f"anomalib_pnpt.{name}",
            *model_args,
            "--ckpt_path",
            str(checkpoint),
            "--data",
            str(defects),
            "--default_root_dir",
            str(tmp_path / "predict"),
        ]
    )
    assert len(list((tmp_path / "predict").rglob("*.png"))) == len(list(defects.iterdir()))
    predicted = {Path(k).name: v for k, v in read_predictions(next((tmp_path / "predict").rglob(JSONL))).items()}
    tested = {
        Path(k).name: v
        for k, v in read_predictions(next((tmp_path / "test").rglob(JSONL))).items()
        if Path(k).parent == defects
    }
    assert sorted(predicted) == sorted(tested) == sorted(p.name for p in defects.iterdir())

    # Export from the checkpoint with anomalib's CLI (OpenVINO and ONNX); the OpenVINO model retrieves the class of
    # a raw file.
    for export_type, folder in (("openvino", "export"), ("onnx", "export_onnx")):
        _run(
            [
                "export",
                "--model",
                f"anomalib_pnpt.{name}",
                *model_args,
                "--ckpt_path",
                str(checkpoint),
                "--export_type",
                export_type,
                "--default_root_dir",
                str(tmp_path / folder),
            ]
        )
    from anomalib_pnpt.deploy import MultiClassOpenVINOInferencer

    exported = next((tmp_path / "export").rglob("model.xml"))
    # FP32 as exported: OpenVINO's CPU plugin otherwise runs it in bf16 where the CPU has AMX (~1 % on scores).
    inferencer = MultiClassOpenVINOInferencer(exported, config={"INFERENCE_PRECISION_HINT": "f32"})
    # The ONNX file, run as it is (OpenVINO reads ONNX; the class output is listed again as for the IR).
    onnx = MultiClassOpenVINOInferencer(
        next((tmp_path / "export_onnx").rglob("model.onnx")), config={"INFERENCE_PRECISION_HINT": "f32"}
    )
    prediction = inferencer.predict(next(defects.iterdir()))
    assert prediction.pred_category == ["disc"]
    assert prediction.pred_label is not None and prediction.pred_mask is not None

    # One answer on every path: anomalib test (engine.test), anomalib predict (engine.predict on anomalib's
    # PredictDataset), the checkpoint's forward, the ONNX export and the OpenVINO FP32 export, image by image.
    model = getattr(anomalib_pnpt, name).load_from_checkpoint(checkpoint).eval()
    for path in sorted(defects.iterdir()):
        with torch.no_grad():
            forward = model(read_image(path, as_tensor=True)[None])
        ov, from_onnx = inferencer.predict(path), onnx.predict(path)
        answers = {
            "test": (tested[path.name]["class"], tested[path.name]["anomalous"]),
            "predict": (predicted[path.name]["class"], predicted[path.name]["anomalous"]),
            "forward": (model.prompt_categories[int(forward.pred_category_id)], bool(forward.pred_label)),
            "openvino": (ov.pred_category[0], bool(np.asarray(ov.pred_label).reshape(-1)[0])),
            "onnx": (from_onnx.pred_category[0], bool(np.asarray(from_onnx.pred_label).reshape(-1)[0])),
        }
        assert len(set(answers.values())) == 1, (path.name, answers)
        score = float(forward.pred_score)
        for path_name, value in (
            ("test", tested[path.name]["score"]),
            ("predict", predicted[path.name]["score"]),
            ("openvino", float(np.asarray(ov.pred_score).reshape(-1)[0])),
            ("onnx", float(np.asarray(from_onnx.pred_score).reshape(-1)[0])),
        ):
            assert value == pytest.approx(score, abs=1e-4), (path.name, path_name)
