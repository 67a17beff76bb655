# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The benchmark harness (unified + separate) and the plugin-aware ``anomalib-pnpt benchmark``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from anomalib_pnpt.benchmarking import BenchmarkJob, build_model, run_job, summarise, write_results
from anomalib_pnpt.evaluation import METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]
PADIM = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2"],
    "pre_trained": False,
    "n_features": 20,
}


@pytest.mark.slow
def test_harness_unified_and_separate(demo_root: Path, tmp_path: Path) -> None:
    rows = []
    for mode, groups in (("unified", [["disc", "weave"]]), ("separate", [["disc"], ["weave"]])):
        for group in groups:
            job = BenchmarkJob(
                name="PaDiM",
                class_path="anomalib.models.Padim",
                init_args=PADIM,
                root=str(demo_root),
                categories=group,
                mode=mode,
                num_workers=0,
                accelerator="cpu",
                output_dir=str(tmp_path / mode / "+".join(group)),
            )
            rows += run_job(job)
    table = summarise(rows)
    assert set(zip(table["mode"], table["category"], strict=True)) == {
        (m, c) for m in ("unified", "separate") for c in ("disc", "weave", "mean")
    }
    for column in ("fit_s", "ms_per_image", "peak_memory_mb", "model_size_mb"):
        assert (table[column] > 0).all(), column
    separate = table[table["mode"] == "separate"].set_index("category")
    # Separate mode trains two models: its size for the class set is the sum of both.
    assert separate.loc["mean", "model_size_mb"] == pytest.approx(
        separate.loc[["disc", "weave"], "model_size_mb"].sum()
    )
    write_results(table, tmp_path / "out", command="test")
    assert (tmp_path / "out" / "results.md").read_text().startswith("Command: `test`")
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 6
    assert all((tmp_path / "out" / f"{metric}.png").is_file() for metric in METRICS)


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
            "num_heads": 4,
            "num_encoder_layers": 1,
            "num_decoder_layers": 1,
            "ffn_dim": 64,
            "texture_dir": None,
        },
        "PNPT": {"backbone": "tf_efficientnet_lite0", "image_size": 64, "hidden_dim": 32, "num_semantic_tokens": 4},
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


def _run_benchmark_script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run_benchmark.py"), *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=900,
    )


def test_harness_skips_without_data(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"root": str(tmp_path / "missing"), "models": []}))
    result = _run_benchmark_script("--config", str(config))
    assert result.returncode == 0
    assert "SKIPPED: dataset root" in result.stdout


def test_harness_never_calibrates_on_test_images(demo_root: Path) -> None:
    from anomalib_pnpt.benchmarking.harness import build_datamodule

    job = BenchmarkJob(
        name="PaDiM", class_path="Padim", init_args=PADIM, root=str(demo_root), categories=["disc", "weave"], mode="u"
    )
    datamodule = build_datamodule(job)
    datamodule.setup()
    validation = set(datamodule.val_data.samples["image_path"])
    test = set(datamodule.test_data.samples["image_path"])
    train = set(datamodule.train_data.samples["image_path"])
    assert validation, "the harness must hold out normal training images for calibration"
    assert not validation & test
    assert not validation & train
    assert all("/train/" in path for path in validation)
    assert {"disc", "weave"} <= set(datamodule.val_data.samples["category"])


def test_stock_models_get_their_backbones_pre_processing_and_weights() -> None:
    import torch
    from torchvision.transforms.v2 import Normalize

    from anomalib_pnpt.backbones import load_offline_state_dict

    def normalize(model: torch.nn.Module) -> Normalize:
        return next(t for t in model.pre_processor.transform.transforms if isinstance(t, Normalize))

    pretrained = build_model("anomalib.models.Padim", {**PADIM, "pre_trained": True})
    assert normalize(pretrained).mean == [0.5, 0.5, 0.5]
    assert normalize(pretrained).std == [0.5, 0.5, 0.5]
    stem = load_offline_state_dict("tf_efficientnet_lite0")["conv_stem.weight"]
    extractor = pretrained.model.feature_extractor.feature_extractor
    assert torch.equal(extractor.conv_stem.weight, stem)
    # pre_trained=False means random weights, as on the anomalib CLI.
    random = build_model("anomalib.models.Padim", {**PADIM, "pre_trained": False})
    assert not torch.equal(random.model.feature_extractor.feature_extractor.conv_stem.weight, stem)
    # An explicit pre-processor is kept.
    wrn = build_model("anomalib.models.Padim", {**PADIM, "pre_processor": True})
    assert normalize(wrn).mean == [0.485, 0.456, 0.406]


@pytest.mark.slow
def test_smoke_demo_config_runs_on_the_embedded_demo(tmp_path: Path) -> None:
    config = REPO_ROOT / "benchmarks" / "configs" / "smoke_demo.yaml"
    result = _run_benchmark_script("--config", str(config), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SKIPPED" not in result.stdout
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert {"unified", "separate"} == set(table["mode"])
    # Progress of each job reaches the console while it runs.
    assert "PaDiM unified: epoch 1/1 trained" in result.stdout
    assert table["pooled_AUROC_raw"].notna().any()
