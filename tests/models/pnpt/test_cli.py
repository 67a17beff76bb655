# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib train / test / predict --model anomalib_pnpt.Pnpt`` with the CPU config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
ANOMALIB = str(Path(sys.executable).with_name("anomalib"))
SMALL = [
    "--model.init_args.image_size",
    "128",
    "--model.init_args.hidden_dim",
    "32",
    "--model.init_args.num_layers",
    "1",
]


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
def test_train_test_predict_from_checkpoint(demo_root: Path, tmp_path: Path) -> None:
    data = ["--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0"]
    config = ["--config", "configs/pnpt_cpu.yaml", *data, *SMALL]
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
        ]
    )
    checkpoint = next((tmp_path / "train").rglob("*.ckpt"))

    tested = _run(["test", *config, "--ckpt_path", str(checkpoint), "--default_root_dir", str(tmp_path / "test")])
    assert "retrieval_accuracy" in tested.stdout
    assert next((tmp_path / "test").rglob("per_class_metrics.csv"))

    _run(
        [
            "predict",
            "--model",
            "anomalib_pnpt.Pnpt",
            "--model.backbone",
            "tf_efficientnet_lite2",
            "--model.image_size",
            "128",
            "--model.hidden_dim",
            "32",
            "--model.num_layers",
            "1",
            "--model.num_semantic_tokens",
            "20",
            "--model.ffn_dim",
            "512",
            "--ckpt_path",
            str(checkpoint),
            "--data",
            str(demo_root / "disc" / "test" / "scratch"),
            "--default_root_dir",
            str(tmp_path / "predict"),
        ]
    )
    assert len(list((tmp_path / "predict").rglob("*.png"))) == len(
        list((demo_root / "disc" / "test" / "scratch").iterdir())
    )
