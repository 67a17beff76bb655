# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

r"""One rule for every model: normalise images with the statistics the backbone was trained with.

anomalib's stock models normalise with the ImageNet mean/std of torchvision's ResNets whatever their
backbone; EfficientNet-Lite (``tf_efficientnet_lite*``) was trained on ``mean = std = 0.5`` (timm's
pretrained config), so a stock PatchCore or PaDiM on a Lite backbone sees shifted, rescaled inputs. PNPT,
OneNIP and the benchmark harness's stock models all take their pre-processor from here.

:class:`BackbonePreProcessor` has plain-data arguments, so the anomalib CLI can give it to any model::

    anomalib train --model Patchcore --model.backbone tf_efficientnet_lite2 ... \\
        --model.pre_processor anomalib_pnpt.BackbonePreProcessor \\
        --model.pre_processor.backbone tf_efficientnet_lite2

Example:
    >>> from anomalib_pnpt.pre_processing import BackbonePreProcessor, backbone_normalization
    >>> backbone_normalization("tf_efficientnet_lite2")
    ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    >>> BackbonePreProcessor("wide_resnet50_2", image_size=224).transform.transforms[1].mean
    [0.485, 0.456, 0.406]
"""

from __future__ import annotations

import timm
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Compose, Normalize, Resize

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def backbone_normalization(backbone: str) -> tuple[list[float], list[float]]:
    """Mean and std the backbone was trained with (timm's pretrained config; ImageNet's if timm has none).

    Args:
        backbone: timm model name.

    Returns:
        ``(mean, std)`` per RGB channel.
    """
    config = timm.get_pretrained_cfg(backbone)
    if config is None:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [float(v) for v in config.mean], [float(v) for v in config.std]


class BackbonePreProcessor(PreProcessor):
    """anomalib's pre-processor (resize, then normalise) with the backbone's own normalisation.

    Args:
        backbone: timm name of the model's backbone (e.g. ``"tf_efficientnet_lite2"``, ``"wide_resnet50_2"``).
        image_size: Side (or ``(height, width)``) images are resized to; 256 as anomalib's default.

    Example:
        >>> import torch
        >>> pre_processor = BackbonePreProcessor("tf_efficientnet_lite2", image_size=64)
        >>> round(float(pre_processor.transform(torch.full((1, 3, 80, 80), 0.5)).abs().max()), 5)
        0.0
    """

    def __init__(self, backbone: str, image_size: int | tuple[int, int] | list[int] = 256) -> None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        mean, std = backbone_normalization(backbone)
        super().__init__(transform=Compose([Resize(size, antialias=True), Normalize(mean=mean, std=std)]))
        self.backbone = backbone
        self.image_size = size
