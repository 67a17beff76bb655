# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""How a model trains, grouped in one constructor argument: what shapes a run, not the model it makes.

``Pnpt(training={"learning_rate": 1e-3, "seed": 7})``, ``--model.training.seed 7`` on anomalib's CLI. A key left
out takes the model's default (its paper's, or its preset's learning rate). None of these is compared with a
checkpoint's when it is loaded (:mod:`~anomalib_pnpt.checkpoint_arguments`): a resumed fit may change them.

Example:
    >>> resolve_training({"learning_rate": 1e-4, "seed": None}, {"seed": 7})
    {'learning_rate': 0.0001, 'seed': 7}
"""

# No ``from __future__ import annotations`` here: jsonargparse reads the TypedDict's field types at run time.
from collections.abc import Mapping
from typing import Any, TypedDict


class TrainingSettings(TypedDict, total=False):
    """The keys of ``training`` (every one optional).

    Attributes:
        learning_rate: AdamW learning rate (default: the preset's).
        weight_decay: AdamW weight decay (both papers: 1e-4).
        gradient_clip: Gradient-norm clipping, 0 for none (PNPT: 0; OneNIP's paper: 0.1).
        cache_features: Reuse training images' frozen-backbone features across epochs.
        feature_cache_mb: Memory bound of that cache in MiB (beyond it, features are computed every epoch).
        texture_dir: DTD-layout folder of anomaly textures for synthetic anomalies (``None``: noise textures).
        seed: Seed of the weights and of training's random draws (anomalib 2.7's CLI ignores ``--seed_everything``).
        rebuild_prompt_pool: Build the prompt pool again when training starts, even from a checkpoint that has one.
        calibration_images: Normal training images on which a network's normal scale is measured.
    """

    learning_rate: float
    weight_decay: float
    gradient_clip: float
    cache_features: bool
    feature_cache_mb: float | None
    texture_dir: str | None
    seed: int | None
    rebuild_prompt_pool: bool
    calibration_images: int


DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "weight_decay": 1e-4,
    "gradient_clip": 0.0,
    "cache_features": True,
    "feature_cache_mb": 8192,
    "texture_dir": None,
    "seed": None,
    "rebuild_prompt_pool": False,
    "calibration_images": 256,
}


def resolve_training(defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model's ``defaults`` with what the caller gave over them.

    Args:
        defaults: Every setting's default for this model.
        given: The ``training`` argument (``None``: all defaults).

    Returns:
        All settings.

    Raises:
        ValueError: For a key that is not a setting.
    """
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        msg = f"Unknown training setting(s) {unknown}; the settings are {sorted(defaults)}."
        raise ValueError(msg)
    settings = {**defaults, **(given or {})}
    # jsonargparse 4.46 turns a dotted ``--model.training.texture_dir null`` over a config's value into "None".
    if settings.get("texture_dir") in {"None", "null"}:
        settings["texture_dir"] = None
    return settings
