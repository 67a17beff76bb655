# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``training``: how a model trains, one grouped argument with each model's defaults."""

from __future__ import annotations

import pytest

from anomalib_pnpt import OneNip, Pnpt
from anomalib_pnpt.training_settings import DEFAULTS, resolve_training


def test_a_given_key_wins_and_an_unknown_key_is_refused() -> None:
    assert resolve_training(DEFAULTS, {"seed": 7})["seed"] == 7
    assert resolve_training(DEFAULTS, None) == DEFAULTS
    with pytest.raises(ValueError, match=r"Unknown training setting\(s\) \['lr'\]"):
        resolve_training(DEFAULTS, {"lr": 0.1})
    # what jsonargparse makes of a dotted ``null`` over a config's texture folder
    assert resolve_training(DEFAULTS, {"texture_dir": "None"})["texture_dir"] is None


def test_each_model_takes_its_papers_defaults_and_its_presets_learning_rate() -> None:
    pnpt = Pnpt(preset="cpu", pre_trained=False)
    onenip = OneNip(preset="cpu", pre_trained=False, training={"learning_rate": 1e-3, "gradient_clip": 0.5})
    assert (pnpt.learning_rate, pnpt.gradient_clip, pnpt.lr_schedule) == (5e-4, 0.0, "constant")
    assert (onenip.learning_rate, onenip.gradient_clip, onenip.lr_schedule) == (1e-3, 0.5, "step")
    assert OneNip(pre_trained=False, backbone="tf_efficientnet_lite0").gradient_clip == 0.1  # the paper's
