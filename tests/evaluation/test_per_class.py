# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PerClassEvaluation inside a real anomalib Engine run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from anomalib.engine import Engine
from anomalib.models import Padim

from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.evaluation import PerClassEvaluation, evaluate_per_class


@pytest.fixture(scope="module")
def tested_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, PerClassEvaluation, Path]:
    output = tmp_path_factory.mktemp("run")
    datamodule = MultiClassMVTecAD(root=demo_root, num_workers=0, train_batch_size=32, eval_batch_size=32)
    model = Padim(backbone="tf_efficientnet_lite0", layers=["blocks.1", "blocks.2"], pre_trained=False, n_features=20)
    engine = Engine(default_root_dir=output, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    engine.test(model, datamodule=datamodule)
    evaluation = next(c for c in engine.trainer.callbacks if isinstance(c, PerClassEvaluation))
    return engine, evaluation, Path(engine.trainer.default_root_dir)


def test_datamodule_attaches_evaluator_before_post_processor(tested_run: tuple) -> None:
    engine, _, _ = tested_run
    names = [type(c).__name__ for c in engine.trainer.callbacks]
    assert names.index("PerClassEvaluation") < names.index("PostProcessor")


def test_table_files_and_raw_scores(tested_run: tuple) -> None:
    _, evaluation, run_dir = tested_run
    table = pd.read_csv(run_dir / "per_class_metrics.csv", index_col="category")
    assert list(table.index) == ["disc", "tiles", "weave", "mean"]
    assert table.loc["mean", "image_AUROC"] == pytest.approx(
        table.loc[["disc", "tiles", "weave"], "image_AUROC"].mean()
    )
    payload = json.loads((run_dir / "per_class_metrics.json").read_text())
    assert set(payload["metrics"]) == {"disc", "tiles", "weave", "mean"}
    # Raw PaDiM scores (Mahalanobis distances) are not clamped to [0, 1] by the post-processor.
    scores = torch.cat(evaluation._buffers["score"])
    assert scores.max() > 1.0
    assert len(torch.unique(scores)) == len(scores)
    # The table is what evaluate_per_class gives on the collected raw predictions.
    recomputed, _ = evaluate_per_class(evaluation._buffers["category"], scores, torch.cat(evaluation._buffers["label"]))
    assert recomputed.loc["disc", "image_AUROC"] == pytest.approx(table.loc["disc", "image_AUROC"])


def test_visualisations_of_classes_do_not_overwrite(tested_run: tuple, demo_root: Path) -> None:
    _, _, run_dir = tested_run
    images = run_dir / "images"
    written = sorted(p.relative_to(images) for p in images.rglob("*.png"))
    expected = sorted(p.relative_to(demo_root) for p in demo_root.glob("*/test/*/*.png"))
    assert written == expected  # <category>/test/<defect>/<file>: one picture per test image


def test_refuses_to_evaluate_after_the_post_processor(tmp_path: Path) -> None:
    """Scores already normalised and clamped would give a wrong table: the order is checked, not assumed."""
    from anomalib.post_processing import PostProcessor
    from lightning.pytorch import Trainer

    evaluation = PerClassEvaluation()
    trainer = Trainer(default_root_dir=tmp_path, callbacks=[PostProcessor(), evaluation], logger=False)
    with pytest.raises(RuntimeError, match="before the model's post-processor"):
        evaluation.on_test_start(trainer, Padim(pre_trained=False))
