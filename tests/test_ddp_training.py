# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A real two-process Lightning DDP fit on CPU (gloo) builds the same prompt state on every rank as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_training.py")
REPO_ROOT = SCRIPT.parents[1]


def _fit(model: str, demo_root: Path, out_dir: Path, devices: int) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), model, str(demo_root), str(out_dir), "--devices", str(devices)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["Pnpt", "OneNip"])
def test_two_process_ddp_fit_builds_the_single_process_pool(model: str, demo_root: Path, tmp_path: Path) -> None:
    """Two ranks end with one process's pool and the same per-class calibration.

    The pool is built before the first step, so it must equal one process's; the calibration follows
    differently trained steps, so only the two ranks must agree (each validated half of the images).
    """
    _fit(model, demo_root, tmp_path, devices=1)
    _fit(model, demo_root, tmp_path, devices=2)
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
