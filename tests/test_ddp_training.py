# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Real two-process Lightning DDP on CPU (gloo): a fit builds one process's prompt state on every rank, and a test
computes one process's per-class metrics and retrieval accuracy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_training.py")
REPO_ROOT = SCRIPT.parents[1]


def _run(model: str, demo_root: Path, out_dir: Path, devices: int, *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), model, str(demo_root), str(out_dir), "--devices", str(devices), *extra],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def single_process_fit(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Directory of a one-process fit of the named model (state files and ``model.ckpt``), made once per model."""
    directories: dict[str, Path] = {}

    def fit(model: str) -> Path:
        if model not in directories:
            directories[model] = tmp_path_factory.mktemp(f"ddp_{model}")
            _run(model, demo_root, directories[model], 1)
        return directories[model]

    return fit


@pytest.mark.slow
@pytest.mark.parametrize("model", ["Pnpt", "OneNip"])
def test_two_process_ddp_fit_builds_the_single_process_pool(
    model: str, demo_root: Path, single_process_fit: Callable[[str], Path]
) -> None:
    """Two ranks end with one process's pool and the same per-class calibration.

    The pool is built before the first step, so it must equal one process's; the calibration follows
    differently trained steps, so only the two ranks must agree (each validated half of the images).
    """
    tmp_path = single_process_fit(model)
    _run(model, demo_root, tmp_path, 2)
    single = torch.load(tmp_path / "rank0_of1.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{rank}_of2.pt", weights_only=True) for rank in range(2)]
    assert bool(single["prompt_pool.built"])
    for rank, state in enumerate(ranks):
        assert state.keys() == single.keys()
        for name in (name for name in single if not name.startswith("calibration.")):
            assert state[name].shape == single[name].shape, (rank, name)
            assert torch.allclose(state[name].float(), single[name].float(), atol=1e-5), (rank, name)
    calibration = [name for name in single if name.startswith("calibration.")]
    assert all(ranks[0][name].numel() == 3 for name in calibration if ".class_" in name)  # one value per class
    for name in calibration:  # NaN: a class with one validation image has no score range (the global one)
        torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0, equal_nan=True, msg=name)
    # Each class's single validation image counts once, as in one process: repeats of the sampler dropped.
    image_min = "calibration.class_image_min"
    assert ranks[0][image_min].isnan().tolist() == single[image_min].isnan().tolist()


@pytest.mark.slow
def test_two_process_ddp_test_reports_the_single_process_metrics(
    demo_root: Path, single_process_fit: Callable[[str], Path]
) -> None:
    """``engine.test`` of one checkpoint on two ranks gives one process's per-class table and retrieval accuracy.

    Each rank tests half of the images (and the sampler repeats one when the count is odd): every rank must
    report the metrics of the whole test set, each image counted once. One model suffices: the per-class
    evaluation and the retrieval count are shared by both models.
    """
    directory = single_process_fit("Pnpt")
    for devices in (1, 2):
        _run("Pnpt", demo_root, directory, devices, "--test-checkpoint", str(directory / "model.ckpt"))
    single = torch.load(directory / "test_rank0_of1.pt", weights_only=True)
    assert single["categories"][-1] == "mean"
    assert single["retrieval_accuracy"] > 0
    for rank in range(2):
        state = torch.load(directory / f"test_rank{rank}_of2.pt", weights_only=True)
        assert state["categories"] == single["categories"]
        assert state["metrics"] == single["metrics"]
        torch.testing.assert_close(state["table"], single["table"], atol=1e-6, rtol=0, equal_nan=True)
        assert state["retrieval_accuracy"] == pytest.approx(single["retrieval_accuracy"])
