# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""End to end: anomalib's own CLI trains PaDiM over two demo classes through our datamodule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ANOMALIB = str(Path(sys.executable).with_name("anomalib"))


@pytest.mark.slow
def test_anomalib_cli_train_gives_per_class_table(demo_root: Path, tmp_path: Path) -> None:
    command = [
        ANOMALIB,
        "train",
        "--model",
        "Padim",
        "--model.backbone",
        "tf_efficientnet_lite0",
        "--model.pre_trained",
        "false",
        "--model.n_features",
        "20",
        "--model.layers",
        "[blocks.1,blocks.2]",
        "--data",
        "anomalib_pnpt.data.MultiClassMVTecAD",
        "--data.root",
        str(demo_root),
        "--data.categories",
        "[disc,weave]",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "1",
        "--default_root_dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Per-class metrics" in result.stdout
    tables = list(tmp_path.rglob("per_class_metrics.csv"))
    assert len(tables) == 1
    table = pd.read_csv(tables[0], index_col="category")
    assert list(table.index) == ["disc", "weave", "mean"]
    assert table[["image_AUROC", "pixel_AUROC", "pixel_AP", "PRO"]].notna().all().all()
    assert (table["n_normal"] > 0).all()
    # Pictures land per class, so the two classes' "000.png" do not overwrite each other.
    images = tables[0].parent / "images"
    assert {p.name for p in images.iterdir()} == {"disc", "weave"}


def test_headline_command_offline_ends_with_one_line_naming_the_offline_config(demo_root: Path, tmp_path: Path) -> None:
    """The README's first command on a machine without the hub: a one-line error after anomalib's own logs."""
    command = [
        ANOMALIB,
        "train",
        "--model",
        "anomalib_pnpt.Pnpt",
        "--data",
        "anomalib_pnpt.data.MultiClassMVTecAD",
        "--data.root",
        str(demo_root),
        "--data.num_workers",
        "0",
    ]
    # An empty Hugging Face cache: whatever this machine has downloaded, wide_resnet50_2 cannot be found.
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        command, check=False, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("BackboneWeightsError: No ImageNet weights for 'wide_resnet50_2'")
    assert "configs/pnpt_cpu.yaml" in last_line
    assert "Traceback" not in output
