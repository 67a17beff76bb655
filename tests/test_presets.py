# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Named presets: ``preset="cpu"`` builds the network the benchmarks measured, explicit values win, checkpoints
record the resolved values."""

from __future__ import annotations

import inspect

import pytest

from anomalib_pnpt import OneNip, Pnpt
from anomalib_pnpt.models.onenip.presets import PRESETS as ONENIP_PRESETS
from anomalib_pnpt.models.pnpt.presets import PRESETS as PNPT_PRESETS
from anomalib_pnpt.presets import resolve_preset
from anomalib_pnpt.transformer_blocks import ResidualAttention


def _shapes(model: Pnpt | OneNip) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.model.state_dict().items()}


def test_an_explicit_value_wins_and_an_unknown_preset_is_refused() -> None:
    assert resolve_preset({"a": {"x": 1}}, "a", {"x": None, "y": None}) == {"x": 1, "y": None}
    assert resolve_preset({"a": {"x": 1}}, "a", {"x": 2}) == {"x": 2}
    with pytest.raises(ValueError, match="Unknown preset 'b'"):
        resolve_preset({"a": {}}, "b", {})


def test_pnpt_cpu_preset_is_the_benchmarked_network() -> None:
    model = Pnpt(preset="cpu", pre_trained=False)
    assert model.model.feature_extractor.out_channels == [24, 48, 120]  # Lite2 stages 1-3
    assert model.model.semantic_tokens.shape == (1, 20, 128)
    assert len(model.model.sace) == 4
    assert model.model.hpe.noise_target == "patch"
    assert model.learning_rate == 5e-4
    assert len(Pnpt(preset="lineside", pre_trained=False).model.sace) == 2


def test_onenip_cpu_preset_is_the_benchmarked_network_with_the_bank_of_copies() -> None:
    model = OneNip(preset="cpu", pre_trained=False)
    assert sum(model.model.feature_extractor.out_channels) == 208  # Lite2 stages 1-4
    assert (len(model.model.encoder), len(model.model.decoder)) == (2, 2)
    assert model.model.input_projection.out_features == 128
    assert model.learning_rate == 5e-4
    assert model.synthetic_bank.refresh_epochs == 3


def test_onenips_cpu_preset_drops_no_attention_weight_and_keeps_the_papers_residual_dropout() -> None:
    """Dropout on the attention weights keeps PyTorch's CPU attention off its fused kernel (~1.5x slower training)."""
    for preset, attention_dropout in (("cpu", 0.0), ("lineside", 0.0), ("paper", 0.1)):
        network = OneNip(preset=preset, backbone="tf_efficientnet_lite0", pre_trained=False).model
        attentions = [module for module in network.modules() if isinstance(module, ResidualAttention)]
        assert len(attentions) == len(network.encoder) + 2 * len(network.decoder) + 1
        assert {module.attention.dropout for module in attentions} == {attention_dropout}, preset
        assert {module.dropout.p for module in attentions} == {0.1}, preset


def test_the_paper_preset_is_the_default_and_explicit_arguments_override_it() -> None:
    model = Pnpt(pre_trained=False, backbone="tf_efficientnet_lite0", hidden_dim=32)
    assert model.hparams["preset"] == "paper"
    assert model.hparams["hidden_dim"] == 32
    assert PNPT_PRESETS["paper"]["num_semantic_tokens"] == 40
    assert model.model.semantic_tokens.shape == (1, 40, 32)


@pytest.mark.parametrize(("model_class", "presets"), [(Pnpt, PNPT_PRESETS), (OneNip, ONENIP_PRESETS)])
def test_a_checkpoint_records_the_values_the_preset_resolved_to(model_class: type, presets: dict) -> None:
    """A preset changed in a later version must not change the network a checkpoint rebuilds."""
    model = model_class(preset="cpu", pre_trained=False)
    arguments = inspect.signature(model_class.__init__).parameters
    recorded = [name for name in presets["cpu"] if name in arguments]
    assert {"backbone", "hidden_dim"} <= set(recorded)
    for name in recorded:
        assert model.hparams[name] == presets["cpu"][name], name


def test_onenips_lineside_preset_is_the_cpu_preset_with_one_encoder_and_one_decoder_layer() -> None:
    cpu, lineside = dict(ONENIP_PRESETS["cpu"]), dict(ONENIP_PRESETS["lineside"])
    depth = [(lineside.pop(key), cpu.pop(key)) for key in ("num_encoder_layers", "num_decoder_layers")]
    assert depth == [(1, 2), (1, 2)]
    assert lineside == cpu
    model = OneNip(preset="lineside", pre_trained=False)
    assert (model.hparams["num_encoder_layers"], model.hparams["num_decoder_layers"]) == (1, 1)
