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


def test_a_network_given_as_data_binds_to_its_constructor() -> None:
    """``NetworkWithMemory``'s ``network`` is plain data: its arguments are checked here, not by the CLI."""
    entry = yaml.safe_load((CONFIGS[0].parent / "onenip_memory_cpu.yaml").read_text())["model"]["init_args"]
    network = entry["network"]
    inspect.signature(_import(network["class_path"]).__init__).bind(None, **network["init_args"])


def test_lineside_config_differs_from_the_cpu_config_only_in_its_preset() -> None:
    """The latency-sized PNPT is the accuracy-benchmarked CPU model with fewer SACE/CSCD pairs."""
    from anomalib_pnpt.models.pnpt.presets import PRESETS

    folder = CONFIGS[0].parent
    cpu = yaml.safe_load((folder / "pnpt_cpu.yaml").read_text())
    lineside = yaml.safe_load((folder / "pnpt_cpu_lineside.yaml").read_text())
    presets = cpu["model"]["init_args"].pop("preset"), lineside["model"]["init_args"].pop("preset")
    assert presets == ("cpu", "lineside")
    for config in (cpu, lineside):
        del config["trainer"]["logger"]["init_args"]["name"]  # each config logs under its own name
    assert lineside == cpu
    cpu_preset, lineside_preset = dict(PRESETS["cpu"]), dict(PRESETS["lineside"])
    assert lineside_preset.pop("num_layers") < cpu_preset.pop("num_layers")
    assert lineside_preset == cpu_preset
