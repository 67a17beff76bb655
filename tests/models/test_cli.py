# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib train / test / predict / export --model anomalib_pnpt.<Model>`` with each model's CPU config."""

from __future__ import annotations

import json
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
from anomalib_pnpt.unknown_class import UnknownClassBound

REPO_ROOT = Path(__file__).resolve().parents[2]
ANOMALIB = str(Path(sys.executable).with_name("anomalib"))
JSONL = "predictions.jsonl"
# Every shipped config, with the arguments that make it tiny (random weights where the backbone is on the hub).
# The configs' DTD folder may be absent (CI): noise textures.
TINY_PNPT = {"image_size": "128", "hidden_dim": "32", "num_layers": "1", "training.texture_dir": "null"}
TINY_ONENIP = {
    "image_size": "128",
    "hidden_dim": "32",
    "num_encoder_layers": "1",
    "num_decoder_layers": "1",
    "training.texture_dir": "null",
}
TINY_ONENIP_JSON = {**{k: int(v) for k, v in TINY_ONENIP.items() if v.isdigit()}, "training": {"texture_dir": None}}
CONFIGS = {
    "pnpt_cpu": ("Pnpt", TINY_PNPT),
    "pnpt_cpu_lineside": ("Pnpt", TINY_PNPT),
    "pnpt": ("Pnpt", {**TINY_PNPT, "pre_trained": "false"}),
    "onenip_cpu": ("OneNip", TINY_ONENIP),
    "onenip": ("OneNip", {**TINY_ONENIP, "pre_trained": "false"}),
    # The network as one JSON value (jsonargparse reads a dotted null inside a dict argument as the string "None").
    "onenip_memory_cpu": (
        "NetworkWithMemory",
        {
            "network": json.dumps(
                {"class_path": "anomalib_pnpt.OneNip", "init_args": {**TINY_ONENIP_JSON, "preset": "cpu"}}
            )
        },
    ),
}
# A flag that contradicts the trained checkpoint: (flag, value, the checkpoint's value).
CONTRADICTION = {"NetworkWithMemory": ("map_weight", "0.5", "0.25")}


def _run(arguments: list[str], succeeds: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [ANOMALIB, *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert (result.returncode == 0) is succeeds, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_train_test_predict_export_from_checkpoint(config_name: str, demo_root: Path, tmp_path: Path) -> None:
    """``anomalib predict`` and ``anomalib export`` with the checkpoint alone decide as ``anomalib test`` did."""
    name, small = CONFIGS[config_name]
    config_file = f"configs/{config_name}.yaml"
    # Test one image per batch, as forward and the export see it: a paper-sized backbone's scores otherwise move by
    # ~1e-4 with the batch size (float summation order), beyond the comparison's tolerance.
    data = ["--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0"]
    data += ["--data.init_args.eval_batch_size", "1"]
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
    # and the network's noise-free fit beside its prior's (PNPT: the class mean) or prompt's (OneNIP), per epoch
    reference = "fit_prior_loss" if name == "Pnpt" else "fit_prompt_loss"  # NetworkWithMemory: OneNIP's
    assert "fit_network_loss" in metrics[0] and reference in metrics[0]

    tested = _run(["test", *config, "--ckpt_path", str(checkpoint), "--default_root_dir", str(tmp_path / "test")])
    assert "retrieval_accuracy" in tested.stdout
    assert next((tmp_path / "test").rglob("per_class_metrics.csv"))

    defects = demo_root / "disc" / "test" / "scratch"
    # anomalib's documented form: the model's class and the checkpoint, no --model.* flag (the checkpoint has them).
    _run(
        [
            "predict",
            "--model",
            f"anomalib_pnpt.{name}",
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

    # A flag that contradicts the checkpoint: one line that says so, never a silent other model.
    flag, value, saved = CONTRADICTION.get(name, ("hidden_dim", "64", "32"))
    contradicted = _run(
        [
            "predict",
            "--model",
            f"anomalib_pnpt.{name}",
            f"--model.{flag}",
            value,
            "--ckpt_path",
            str(checkpoint),
            "--data",
            str(defects),
            "--default_root_dir",
            str(tmp_path / "contradicted"),
        ],
        succeeds=False,
    )
    last = contradicted.stderr.strip().splitlines()[-1]
    assert last.startswith(f"CheckpointArgumentError: --model.{flag} {value} (checkpoint: {saved})"), last
    assert "Traceback" not in contradicted.stderr

    # Export from the checkpoint alone with anomalib's CLI; the OpenVINO model retrieves the class of a raw file
    # (ONNX parity with torch: tests/models/test_export.py).
    _run(
        [
            "export",
            "--model",
            f"anomalib_pnpt.{name}",
            "--ckpt_path",
            str(checkpoint),
            "--export_type",
            "openvino",
            "--default_root_dir",
            str(tmp_path / "export"),
        ]
    )
    from anomalib_pnpt.deploy import MultiClassOpenVINOInferencer

    exported = next((tmp_path / "export").rglob("model.xml"))
    # FP32 as exported: OpenVINO's CPU plugin otherwise runs it in bf16 where the CPU has AMX (~1 % on scores).
    inferencer = MultiClassOpenVINOInferencer(exported, config={"INFERENCE_PRECISION_HINT": "f32"})
    prediction = inferencer.predict(next(defects.iterdir()))
    assert prediction.pred_category == ["disc"]
    assert prediction.pred_label is not None and prediction.pred_mask is not None

    # One answer on every path: anomalib test (engine.test), anomalib predict (engine.predict on anomalib's
    # PredictDataset), the checkpoint's forward and the OpenVINO FP32 export, image by image.
    model = getattr(anomalib_pnpt, name).load_from_checkpoint(checkpoint).eval()
    bounds = next(module for module in model.modules() if isinstance(module, UnknownClassBound)).bounds
    for path in sorted(defects.iterdir()):
        with torch.no_grad():
            forward = model(read_image(path, as_tensor=True)[None])
        ov = inferencer.predict(path)
        answers = {
            "test": (tested[path.name]["class"], tested[path.name]["anomalous"]),
            "predict": (predicted[path.name]["class"], predicted[path.name]["anomalous"]),
            "forward": (model.prompt_categories[int(forward.pred_category_id)], bool(forward.pred_label)),
            "openvino": (ov.pred_category[0], bool(np.asarray(ov.pred_label).reshape(-1)[0])),
        }
        assert len(set(answers.values())) == 1, (path.name, answers)
        score = float(forward.pred_score)
        # An image within float rounding of its class's unknown-class bound may fall on either side of it in torch
        # and in OpenVINO, and the flag sets the score to 1; the labels above agree all the same.
        at_bound = abs(float(forward.pred_category_similarity) - float(bounds[int(forward.pred_category_id)])) < 1e-4
        for path_name, value in (
            ("test", tested[path.name]["score"]),
            ("predict", predicted[path.name]["score"]),
            ("openvino", float(np.asarray(ov.pred_score).reshape(-1)[0])),
        ):
            if at_bound and path_name == "openvino":
                continue
            assert value == pytest.approx(score, abs=1e-4), (path.name, path_name)
