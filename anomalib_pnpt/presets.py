# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Named presets: a model's architecture and training defaults kept as data (paper, CPU, line-side).

A model's constructor takes ``preset`` and, for every argument its presets set, ``None`` as default: an
explicit value wins, ``None`` takes the preset's value. anomalib's CLI keeps working on the flat arguments
(``--model.preset cpu --model.hidden_dim 256``), in the way anomalib's Dinomaly derives its architecture from a
data table, and a checkpoint records the resolved values, so it rebuilds the same network even if a preset
changes later.

Example:
    >>> presets = {"small": {"width": 32}, "large": {"width": 256}}
    >>> resolve_preset(presets, "small", {"width": None, "depth": 2})
    {'width': 32, 'depth': 2}
    >>> resolve_preset(presets, "small", {"width": 64, "depth": 2})  # an explicit value wins
    {'width': 64, 'depth': 2}
    >>> def network(width: int, depth: int = 1) -> None: ...
    >>> arguments_of(network, {"width": 32, "depth": 2, "learning_rate": 0.1})
    {'width': 32, 'depth': 2}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def resolve_preset(
    presets: Mapping[str, Mapping[str, Any]], preset: str, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """The arguments with every ``None`` the preset sets replaced by the preset's value.

    Args:
        presets: Preset name -> argument values.
        preset: The chosen preset.
        arguments: The constructor's arguments as given (``None`` = not given).

    Returns:
        A new dict with the same keys.

    Raises:
        ValueError: For an unknown preset name.
    """
    if preset not in presets:
        msg = f"Unknown preset {preset!r}; choose one of {sorted(presets)}."
        raise ValueError(msg)
    values = presets[preset]
    return {name: values[name] if value is None and name in values else value for name, value in arguments.items()}


def arguments_of(function: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``function`` (e.g. a torch model's constructor) takes, by name.

    Args:
        function: The callable whose signature selects the names.
        values: Candidate keyword arguments.

    Returns:
        The selected keyword arguments.
    """
    accepted = inspect.signature(function).parameters
    return {name: value for name, value in values.items() if name in accepted}
