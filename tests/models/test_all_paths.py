# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""One answer on every path: ``engine.predict`` on image files, the model's forward and its OpenVINO FP32 export.

The same PNG files go through anomalib's ``Engine.predict`` with its ``PredictDataset`` (the path of
``anomalib predict --data_path``: that dataset, the model's predict step, the per-class post-processing),
through ``model(images)`` and through the exported graph (read with :func:`anomalib_pnpt.deploy.read_model`).
Every image must get the same retrieved class and label on all three. Scores agree within 1e-3 here: these
random-weight models are calibrated on two images per class, so the min-max normalisation stretches float
noise (raw scores differ by ~5e-7 between batch sizes) by about 100x; trained models have wide ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import PredictDataset
from anomalib.engine import Engine
from PIL import Image

from anomalib_pnpt.deploy import read_model
from tests.calibrated_models import MODELS, class_images

openvino = pytest.importorskip("openvino")


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_forward_and_export_give_one_answer(
    name: str, tmp_path: Path, openvino_export: Callable[[str], tuple[torch.nn.Module, Path]]
) -> None:
    model, path = openvino_export(name)
    folder = tmp_path / "parts"
    folder.mkdir()
    for index, image in enumerate(class_images([0, 1, 2, 0, 1, 2])):  # the calibration images: both labels occur
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    files = sorted(folder.iterdir())
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(f))).permute(2, 0, 1).float() / 255 for f in files])
    with torch.no_grad():
        expected = model(images)
    assert len(set(expected.pred_label.tolist())) == 2

    # anomalib's predict dataset at the images' own size (its default, 256 px, would resample them first)
    dataset = PredictDataset(path=folder, image_size=(128, 128))
    batches = Engine(default_root_dir=tmp_path, logger=False).predict(model, dataset=dataset, return_predictions=True)
    predicted = {
        Path(p).name: (float(s), bool(label))
        for b in batches
        for p, s, label in zip(b.image_path, b.pred_score.reshape(-1), b.pred_label.reshape(-1), strict=True)
    }
    core = openvino.Core()
    compiled = core.compile_model(read_model(path, core), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    exported = {key.get_any_name(): value for key, value in compiled(images.numpy()).items()}
    for index, file in enumerate(files):
        score, label = predicted[file.name]
        assert label == bool(expected.pred_label[index]) == bool(exported["pred_label"].reshape(-1)[index])
        assert score == pytest.approx(float(expected.pred_score[index]), abs=1e-3)
        assert float(exported["pred_score"].reshape(-1)[index]) == pytest.approx(score, abs=1e-3)
        assert int(exported["pred_category_id"].reshape(-1)[index]) == int(expected.pred_category_id[index])
