# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Named presets: ``preset="cpu"`` builds the network the benchmarks measured, explicit values win, checkpoints
record the resolved values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_pnpt import OneNip, Pnpt
from anomalib_pnpt.models.onenip.presets import PRESETS as ONENIP_PRESETS
from anomalib_pnpt.models.pnpt.presets import PRESETS as PNPT_PRESETS
from anomalib_pnpt.presets import resolve_preset

COMPARISON = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "unified_comparison_cpu.yaml"


def _benchmarked(name: str) -> dict:
    """The explicit init_args of a model of the one-run comparison (written before presets existed)."""
    models = yaml.safe_load(COMPARISON.read_text())["models"]
    init_args = dict(next(m for m in models if m["name"] == name)["init_args"])
    init_args.pop("texture_dir", None)
    return init_args


def _shapes(model: Pnpt | OneNip) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.model.state_dict().items()}


def test_an_explicit_value_wins_and_an_unknown_preset_is_refused() -> None:
    assert resolve_preset({"a": {"x": 1}}, "a", {"x": None, "y": None}) == {"x": 1, "y": None}
    assert resolve_preset({"a": {"x": 1}}, "a", {"x": 2}) == {"x": 2}
    with pytest.raises(ValueError, match="Unknown preset 'b'"):
        resolve_preset({"a": {}}, "b", {})


def test_pnpt_cpu_preset_is_the_benchmarked_network() -> None:
    explicit = Pnpt(**{**_benchmarked("PNPT"), "pre_trained": False}, seed=0)
    preset = Pnpt(preset="cpu", pre_trained=False, seed=0)
    assert _shapes(preset) == _shapes(explicit)
    assert preset.model.hpe.noise_target == explicit.model.hpe.noise_target == "patch"
    assert preset.learning_rate == explicit.learning_rate == 5e-4


def test_onenip_cpu_preset_is_the_benchmarked_network_with_the_bank_of_copies() -> None:
    explicit = OneNip(**{**_benchmarked("OneNIP"), "pre_trained": False}, seed=0)
    preset = OneNip(preset="cpu", pre_trained=False, seed=0)
    assert _shapes(preset) == _shapes(explicit)
    assert preset.learning_rate == explicit.learning_rate == 5e-4
    assert preset.synthetic_bank.refresh_epochs == 3


def test_the_paper_preset_is_the_default_and_explicit_arguments_override_it() -> None:
    model = Pnpt(pre_trained=False, backbone="tf_efficientnet_lite0", hidden_dim=32, num_heads=4, seed=0)
    assert model.hparams["preset"] == "paper"
    assert model.hparams["hidden_dim"] == 32
    assert model.hparams["num_semantic_tokens"] == PNPT_PRESETS["paper"]["num_semantic_tokens"] == 40
    assert model.model.semantic_tokens.shape == (1, 40, 32)


@pytest.mark.parametrize(("model_class", "presets"), [(Pnpt, PNPT_PRESETS), (OneNip, ONENIP_PRESETS)])
def test_a_checkpoint_records_the_values_the_preset_resolved_to(model_class: type, presets: dict) -> None:
    """A preset changed in a later version must not change the network a checkpoint rebuilds."""
    model = model_class(preset="cpu", pre_trained=False, seed=0)
    for name, value in presets["cpu"].items():
        assert model.hparams[name] == value, name
