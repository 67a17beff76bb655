# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Class-retrieval accuracy as an anomalib metric: by class name, every image once, nothing without names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from anomalib_pnpt import Pnpt
from anomalib_pnpt.evaluation import RetrievalAccuracy


def _batch(predicted: list[str], truth: list[str] | None, paths: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(pred_category=predicted, category=truth, image_path=paths)


def test_counts_by_name_and_each_image_once() -> None:
    metric = RetrievalAccuracy()
    metric.update(_batch(["a", "b", "c"], ["a", "a", "c"], ["1.png", "2.png", "3.png"]))
    # A distributed sampler's repeat of image 3 (retrieved right) must not lift the accuracy above 2 / 3.
    metric.update(_batch(["c"], ["c"], ["3.png"]))
    assert float(metric.compute()) == pytest.approx(2 / 3)
    assert metric.name == "retrieval_accuracy"


def test_images_without_paths_are_all_counted() -> None:
    metric = RetrievalAccuracy()
    metric.update(_batch(["a", "a"], ["a", "b"]))
    metric.update(_batch(["a"], ["a"]))
    assert float(metric.compute()) == pytest.approx(2 / 3)


def test_batches_without_class_names_report_nothing() -> None:
    metric = RetrievalAccuracy()
    metric.update(_batch(["a"], None, ["1.png"]))
    assert metric.compute() is None


def test_both_models_test_with_it_in_anomalibs_evaluator() -> None:
    evaluator = Pnpt.configure_evaluator()
    names = [metric.name for metric in evaluator.test_metrics]
    assert names == ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score", "retrieval_accuracy"]
    assert torch.nn.Module in type(evaluator.test_metrics[-1]).__mro__
