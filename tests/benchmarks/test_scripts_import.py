# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Every benchmark script still imports: the commands in benchmarks/results/README.md stay runnable."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted(path.stem for path in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports(script: str) -> None:
    importlib.import_module(script)  # each script runs only under ``__main__``
