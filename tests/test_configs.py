# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Every shipped CLI config names classes that exist and arguments their constructors accept."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.parametrize("section", ["model", "data"])
def test_config_arguments_bind_to_the_constructor(config: Path, section: str) -> None:
    """A misspelt argument would otherwise only fail when a user runs ``anomalib train --config``."""
    entry = yaml.safe_load(config.read_text())[section]
    signature = inspect.signature(_import(entry["class_path"]).__init__)
    signature.bind(None, **entry.get("init_args", {}))


def test_lineside_config_differs_from_the_cpu_config_only_in_its_preset() -> None:
    """The latency-sized PNPT is the accuracy-benchmarked CPU model with fewer SACE/CSCD pairs and no patch memory.

    The memory's nearest-patch search over a 10 % coreset per class took OneNIP from 61 to 310 ms per image, so the
    latency-sized model keeps the paper's map.
    """
    from anomalib_pnpt.models.pnpt.presets import PRESETS

    folder = CONFIGS[0].parent
    cpu = yaml.safe_load((folder / "pnpt_cpu.yaml").read_text())
    lineside = yaml.safe_load((folder / "pnpt_cpu_lineside.yaml").read_text())
    memory = {name for name in cpu["model"]["init_args"] if name.startswith("memory_")}
    assert memory and not memory & set(lineside["model"]["init_args"])
    for name in memory:
        del cpu["model"]["init_args"][name]
    presets = cpu["model"]["init_args"].pop("preset"), lineside["model"]["init_args"].pop("preset")
    assert presets == ("cpu", "lineside")
    assert lineside == cpu
    cpu_preset, lineside_preset = dict(PRESETS["cpu"]), dict(PRESETS["lineside"])
    assert lineside_preset.pop("num_layers") < cpu_preset.pop("num_layers")
    assert lineside_preset == cpu_preset
