# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Prediction pictures carry the retrieved class, the score and the verdict, below the picture and uncut."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import ImageBatch
from PIL import Image

from anomalib_pnpt import Pnpt, visualizer
from anomalib_pnpt.captions import add_caption, caption_text
from anomalib_pnpt.visualizer import MultiClassImageVisualizer


def test_caption_wraps_to_the_picture_and_keeps_it_unchanged_above() -> None:
    picture = Image.new("RGB", (64, 64), "gray")
    captioned = add_caption(picture, caption_text("a_long_product_class_name", 0.5, True))
    assert captioned.width == 64
    assert captioned.height > 64 + 30  # several lines at this width: wrapped, not cut at the edge
    assert captioned.crop((0, 0, 64, 64)).tobytes() == picture.tobytes()
    assert max(captioned.crop((0, 64, 64, captioned.height)).convert("L").getdata()) > 200  # text drawn
    assert caption_text("bottle", 0.25, False) == "bottle | score 0.250 | normal"


def test_models_use_the_captioning_visualizer() -> None:
    assert isinstance(Pnpt(backbone="tf_efficientnet_lite0", pre_trained=False).visualizer, MultiClassImageVisualizer)


def test_each_saved_picture_is_captioned_with_its_own_class_score_and_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("first", "second"):  # anomalib's visualizer reads the original image from its path
        Image.new("RGB", (64, 64), "gray").save(tmp_path / f"{name}.png")
    batch = ImageBatch(
        image=torch.rand(2, 3, 64, 64),
        image_path=[str(tmp_path / "first.png"), str(tmp_path / "second.png")],
        anomaly_map=torch.rand(2, 1, 64, 64),
        pred_score=torch.tensor([0.7, 0.2]),
        pred_label=torch.tensor([True, False]),
        pred_mask=torch.zeros(2, 1, 64, 64, dtype=torch.bool),
    )
    batch.pred_category_id = torch.tensor([1, 0])  # as the models' test and predict steps attach it
    captions: list[str] = []

    def recording(image: Image.Image, text: str) -> Image.Image:
        captions.append(text)
        return add_caption(image, text)

    monkeypatch.setattr(visualizer, "add_caption", recording)
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), datamodule=None)
    module = SimpleNamespace(prompt_categories=["bottle", "hazelnut_toy"])
    MultiClassImageVisualizer(field_size=(64, 64)).on_predict_batch_end(trainer, module, None, batch, 0)
    assert captions == ["hazelnut_toy | score 0.700 | ANOMALOUS", "bottle | score 0.200 | normal"]
    saved = sorted((tmp_path / "images").rglob("*.png"))
    # One folder per retrieved class (the images name none), as the README says.
    assert [path.relative_to(tmp_path / "images").parts[0] for path in saved] == ["bottle", "hazelnut_toy"]
    assert all(Image.open(path).height > 64 for path in saved)
