# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The harness's epoch choice (``benchmarks/epoch_selection.py``): validation images and unseen defects pick the
epoch that is tested, and scoring the epochs does not change the training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from harness import HarnessJob, run_job

TINY_RESIDUAL_PNPT = {
    "backbone": "tf_efficientnet_lite0",
    "pre_trained": False,
    "image_size": 64,
    "hidden_dim": 32,
    "num_layers": 1,
    "prior_residual": True,
    "training": {"seed": 0, "learning_rate": 1.0},  # diverges: the later epochs are worse, so the restore is tested
}


def _job(root: Path, output: Path, select: bool) -> HarnessJob:
    return HarnessJob(
        name="PNPT",
        class_path="anomalib_pnpt.Pnpt",
        init_args=TINY_RESIDUAL_PNPT,
        root=str(root),
        categories=["disc", "weave"],
        mode="unified",
        max_epochs=2,
        num_workers=0,
        accelerator="cpu",
        output_dir=str(output),
        learning_curve_epochs=[0, 1, 2],
        select_epoch=select,
    )


@pytest.mark.slow
def test_the_tested_epoch_is_the_best_scored_one_and_scoring_leaves_the_training_alone(
    demo_root: Path, tmp_path: Path
) -> None:
    rows = run_job(_job(demo_root, tmp_path / "selected", select=True))
    scores = pd.read_csv(tmp_path / "selected" / "epoch_selection.csv")
    per_epoch = scores[scores["category"] == "score"].set_index("epoch")["score"]
    assert list(per_epoch.index) == [0, 1, 2]
    best = int(per_epoch.idxmax())  # the first of equal maxima: ties go to the earlier epoch
    assert best < 2, "the diverging training should make an earlier epoch the best"
    assert {row["tested_epoch"] for row in rows} == {best}
    # The test ran on the chosen epoch's weights: its raw image AUROC is the test curve's at that epoch.
    curve = pd.read_csv(tmp_path / "selected" / "learning_curve.csv")
    at_best = curve[curve["epoch"] == best].set_index("category")
    for row in rows:
        assert at_best.loc[row["category"], "image_AUROC"] == pytest.approx(row["image_AUROC"])
    # The same job without the choice trains the same network: the epochs' test figures are identical.
    plain = run_job(_job(demo_root, tmp_path / "plain", select=False))
    assert {row["tested_epoch"] for row in plain} == {2}
    plain_curve = pd.read_csv(tmp_path / "plain" / "learning_curve.csv")
    pd.testing.assert_frame_equal(curve.drop(columns="train_s"), plain_curve.drop(columns="train_s"))
