# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Shared fixtures: offline hub, the embedded demo dataset, the optional shared real data, shared exports."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# timm must fail fast instead of retrying the hub for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo dataset at 64 px (small and fast), generated once per test session."""
    from anomalib_pnpt.data import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("demo"), image_size=64, n_train=8, n_test_normal=3, n_test_defect=4
    )


@pytest.fixture(scope="session")
def industrial_root() -> Path:
    """``../shared/data/industrial`` (or ``$ANOMALIB_PNPT_DATA/industrial``); skips when absent."""
    base = Path(os.environ.get("ANOMALIB_PNPT_DATA", REPO_ROOT.parent / "shared" / "data"))
    root = base / "industrial"
    if not root.is_dir():
        pytest.skip(f"shared real data not found at {root} (set ANOMALIB_PNPT_DATA): skipping data-dependent test")
    return root


@pytest.fixture(scope="session")
def openvino_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[torch.nn.Module, Path]]:
    """FP32 OpenVINO export of a small calibrated model (``tests.calibrated_models``), made once per model name.

    Every export traces the whole graph with ``torch.export`` (40-60 s on two cores), so the export, inferencer
    and quantisation tests share one per model instead of exporting again. Tests must not modify the model.
    """
    from anomalib.engine import Engine

    from tests.calibrated_models import calibrated_model

    exports: dict[str, tuple[torch.nn.Module, Path]] = {}

    def export(name: str) -> tuple[torch.nn.Module, Path]:
        if name not in exports:
            folder = tmp_path_factory.mktemp(f"openvino_{name}")
            model = calibrated_model(name)
            path = Engine(default_root_dir=folder).export(
                model, export_type="openvino", export_root=folder, input_size=(128, 128)
            )
            exports[name] = (model, Path(path))
        return exports[name]

    return export
