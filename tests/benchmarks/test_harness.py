# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The lab's benchmark harness (``benchmarks/harness.py``): unified and separate jobs, tables, no test calibration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from harness import HarnessJob, build_datamodule, run_job, summarise, write_results
from run_benchmark import jobs_of

from anomalib_pnpt.evaluation import METRICS
from tests.tiny_models import PADIM

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_harness_unified_and_separate(demo_root: Path, tmp_path: Path) -> None:
    rows = []
    for mode, groups in (("unified", [["disc", "weave"]]), ("separate", [["disc"], ["weave"]])):
        for group in groups:
            job = HarnessJob(
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
    job = HarnessJob(
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


def test_a_models_seed_reaches_its_job(tmp_path: Path) -> None:
    config = {
        "seed": 5,
        "modes": ["unified", "separate"],
        "categories": ["disc", "weave"],
        "models": [
            {"name": "PaDiM", "class_path": "Padim", "init_args": {"path": "$DATA/x"}},
            {"name": "PaDiM-seed1", "class_path": "Padim", "seed": 1},
        ],
    }
    jobs = jobs_of(config, "/data", tmp_path, "/shared")
    # One unified job and one per class for each model; the config's seed unless the model names its own.
    assert [(job.name, job.mode, job.seed) for job in jobs] == [
        (name, mode, seed)
        for name, seed in (("PaDiM", 5), ("PaDiM-seed1", 1))
        for mode in ("unified", "separate", "separate")
    ]
    assert jobs[0].init_args == {"path": "/shared/x"}
    assert len({job.output_dir for job in jobs}) == len(jobs)
    assert [job.name for job in jobs_of(config, "/data", tmp_path, "/shared", selected={"PaDiM-seed1"})] == [
        "PaDiM-seed1"
    ] * 3
