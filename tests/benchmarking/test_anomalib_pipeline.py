# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-pnpt benchmark``: anomalib's benchmark pipeline with plugin class paths, failing loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from anomalib_pnpt.evaluation import METRICS
from tests.tiny_models import PADIM

REPO_ROOT = Path(__file__).resolve().parents[2]


def _anomalib_pnpt(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config))
    executable = str(Path(sys.executable).with_name("anomalib-pnpt"))
    return subprocess.run(
        [executable, "benchmark", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
        timeout=600,
    )


def _config(root: Path, categories: list[str]) -> dict:
    return {
        "accelerator": "cpu",
        "benchmark": {
            "seed": 0,
            "model": {"class_path": "Padim", "init_args": PADIM},
            "data": {
                "class_path": "anomalib_pnpt.data.MultiClassMVTecAD",
                "init_args": {"root": str(root), "categories": categories, "num_workers": 0},
            },
        },
    }


@pytest.mark.slow
def test_anomalib_benchmark_accepts_plugin_class_paths(demo_root: Path, tmp_path: Path) -> None:
    result = _anomalib_pnpt(_config(demo_root, ["disc", "weave"]), tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = list((tmp_path / "runs").rglob("*.csv"))
    assert results, list(tmp_path.rglob("*"))
    frame = pd.read_csv(results[0])
    assert "image_AUROC" in frame.columns
    assert frame["data.class_path"].iloc[0] == "anomalib_pnpt.data.MultiClassMVTecAD"


@pytest.mark.slow
def test_shipped_benchmark_example_runs_every_model_to_one_table(demo_root: Path, tmp_path: Path) -> None:
    """The shipped example, shrunk to the demo data, tiny models and one epoch, runs to its comparison table."""
    config = yaml.safe_load((REPO_ROOT / "benchmarks/configs/anomalib_benchmark_industrial.yaml").read_text())
    tiny = {
        "PatchCore-0.1": {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.2"]},
        "PaDiM": {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.1", "blocks.2"], "n_features": 20},
        "OneNIP": {
            "backbone": "tf_efficientnet_lite0",
            "image_size": 64,
            "hidden_dim": 32,
            "num_encoder_layers": 1,
            "num_decoder_layers": 1,
            "training": {"texture_dir": None},
        },
        "PNPT": {
            "backbone": "tf_efficientnet_lite0",
            "image_size": 64,
            "hidden_dim": 32,
            "training": {"texture_dir": None},
        },
    }
    for entry in config["benchmark"]["model"]["grid"]:
        entry["init_args"].update(tiny[entry["name"]])
        entry["init_args"]["pre_trained"] = False  # random weights: this checks the pipeline, not accuracy
        if "max_epochs" in entry:
            entry["max_epochs"] = 1
    config["benchmark"]["data"]["init_args"].update(
        root=str(demo_root), categories=["disc", "weave"], num_workers=0, train_batch_size=4
    )
    result = _anomalib_pnpt(config, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [table_path] = list((tmp_path / "runs").rglob("comparison.csv"))
    table = pd.read_csv(table_path)
    assert set(table["model"]) == {"PatchCore-0.1", "PaDiM", "OneNIP", "PNPT"}
    assert set(table["category"]) == {"disc", "weave", "mean"}
    assert table[list(METRICS)].notna().all().all()
    results = pd.read_csv(table_path.with_name("results.csv"))
    # Mixed init arguments were collected into one table (a key of one model is empty for the others).
    assert results["model.init_args.coreset_sampling_ratio"].notna().sum() == 1


@pytest.mark.slow
def test_anomalib_benchmark_runs_every_job_and_fails_when_one_fails_while_running(
    demo_root: Path, tmp_path: Path
) -> None:
    """A job that is built fine and fails in its run (PatchCore's coreset of 0 rows, after its training epoch):
    the other job still runs and is saved, and the command exits non-zero naming the failure."""
    config = _config(demo_root, ["disc", "weave"])
    patchcore = {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.2"], "pre_trained": False}
    config["benchmark"]["model"] = {
        "grid": [
            {"name": "broken", "class_path": "Patchcore", "init_args": {**patchcore, "coreset_sampling_ratio": 1e-9}},
            {"name": "PaDiM", "class_path": "Padim", "init_args": PADIM},
        ]
    }
    result = _anomalib_pnpt(config, tmp_path)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert "coreset_size must be a positive integer" in output
    [results] = list((tmp_path / "runs").rglob("results.csv"))
    assert pd.read_csv(results)["model.class_path"].tolist() == ["Padim"]
