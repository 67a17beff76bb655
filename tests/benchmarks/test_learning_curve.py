# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The harness's learning curve (``benchmarks/learning_curve.py``): test metrics during training, kept on disk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from harness import HarnessJob, run_job

TINY_PNPT = {
    "backbone": "tf_efficientnet_lite0",
    "pre_trained": False,
    "image_size": 64,
    "hidden_dim": 32,
    "num_layers": 1,
    "training": {"seed": 0},
}


@pytest.mark.slow
def test_curve_points_are_written_and_the_last_matches_the_final_test(demo_root: Path, tmp_path: Path) -> None:
    job = HarnessJob(
        name="PNPT",
        class_path="anomalib_pnpt.Pnpt",
        init_args=TINY_PNPT,
        root=str(demo_root),
        categories=["disc", "weave"],
        mode="unified",
        max_epochs=2,
        num_workers=0,
        accelerator="cpu",
        output_dir=str(tmp_path),
        learning_curve_epochs=[1, 2],
    )
    rows = run_job(job)
    curve = pd.read_csv(tmp_path / "learning_curve.csv")
    assert sorted(set(curve["epoch"])) == [1, 2]
    assert set(curve["category"]) == {"disc", "weave", "mean"}
    per_epoch = curve[curve["category"] == "mean"].sort_values("epoch")
    assert per_epoch["train_s"].is_monotonic_increasing
    # Nothing trains after the last point, so its raw-score image AUROC is the final test's (pixel metrics differ:
    # the curve scores 128 px maps).
    last = curve[curve["epoch"] == 2].set_index("category")
    for row in rows:
        assert last.loc[row["category"], "image_AUROC"] == pytest.approx(row["image_AUROC"])
