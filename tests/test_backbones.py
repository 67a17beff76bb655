# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The offline EfficientNet-Lite weights are the real ImageNet ones; other backbones fail clearly offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from skimage import data as sample_images
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.backbones import (
    BackboneWeightsError,
    FrozenFeatureExtractor,
    create_pretrained_timm_model,
    load_offline_weights_into,
)

# ImageNet indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup, 504 coffee mug.
CAT_CLASSES = {281, 282, 285}
COFFEE_CLASSES = {504, 967, 968}


def _top5(model: torch.nn.Module, image: torch.Tensor) -> set[int]:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(260, 260), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return set(model((x - 0.5) / 0.5).topk(5).indices[0].tolist())


def test_lite2_weights_classify_real_photos() -> None:
    """A photo of a cat and one of a coffee cup land in the right ImageNet classes (random weights would not)."""
    model = create_pretrained_timm_model("tf_efficientnet_lite2").eval()
    assert _top5(model, sample_images.chelsea()) & CAT_CLASSES
    assert _top5(model, sample_images.coffee()) & COFFEE_CLASSES
    random_model = create_pretrained_timm_model("tf_efficientnet_lite2", pretrained=False).eval()
    assert not (_top5(random_model, sample_images.chelsea()) & CAT_CLASSES)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1"])
def test_other_lite_weights_load(name: str) -> None:
    model = create_pretrained_timm_model(name).eval()
    assert _top5(model, sample_images.chelsea()) & CAT_CLASSES


def test_frozen_extractor_shapes_and_frozen() -> None:
    extractor = FrozenFeatureExtractor("tf_efficientnet_lite2", layers=(1, 2, 3))
    features = extractor(torch.rand(2, 3, 128, 128))
    assert [f.shape[1:] for f in features] == [(24, 32, 32), (48, 16, 16), (120, 8, 8)]
    assert extractor.reductions == [4, 8, 16]
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.model.training  # batch-norm statistics stay frozen


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without the hub and with an empty HF cache, whatever this one has."""
    import huggingface_hub

    monkeypatch.setattr("anomalib_pnpt.backbones._hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)


@pytest.mark.usefixtures("no_hub")
def test_hub_backbone_offline_fails_fast_on_first_use_naming_the_fixes() -> None:
    extractor = FrozenFeatureExtractor("resnet18", layers=(1, 2))  # building needs no network
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsError) as error:
        extractor(torch.rand(1, 3, 64, 64))
    assert time.perf_counter() - start < 5  # no retries
    message = str(error.value)
    assert "hub" in message
    assert "weights_path" in message
    assert "configs/pnpt_cpu.yaml" in message  # the offline configuration


@pytest.mark.usefixtures("no_hub")
def test_a_checkpoints_backbone_weights_make_the_hub_unnecessary() -> None:
    """A trained model's state dict carries the backbone: loading it offline gives that backbone, no download."""
    trained = FrozenFeatureExtractor("resnet18", layers=(1, 2), pretrained=False)
    loaded = FrozenFeatureExtractor("resnet18", layers=(1, 2))
    loaded.load_state_dict(trained.state_dict())
    images = torch.rand(1, 3, 64, 64)
    for mine, theirs in zip(loaded(images), trained(images), strict=True):
        assert torch.equal(mine, theirs)


def test_local_weights_file(tmp_path: Path) -> None:
    reference = create_pretrained_timm_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    extractor = FrozenFeatureExtractor("resnet18", layers=(1, 2), weights_path=path)
    assert torch.equal(extractor.model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_local_weights_file_missing_tensors_is_an_error(tmp_path: Path) -> None:
    state = create_pretrained_timm_model("resnet18", pretrained=False).state_dict()
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(BackboneWeightsError, match=r"layer1\.0\.conv1\.weight"):
        FrozenFeatureExtractor("resnet18", layers=(1,), weights_path=path)


def test_offline_weights_into_stock_anomalib_model() -> None:
    from anomalib.models import Patchcore

    model = Patchcore(backbone="tf_efficientnet_lite2", layers=["blocks.2"], pre_trained=False)
    before = model.model.feature_extractor.feature_extractor.conv_stem.weight.clone()
    assert load_offline_weights_into(model) == 1
    after = model.model.feature_extractor.feature_extractor.conv_stem.weight
    expected = create_pretrained_timm_model("tf_efficientnet_lite2").conv_stem.weight
    assert not torch.equal(before, after)
    assert torch.equal(after, expected)


def test_installed_offline_weights_make_pre_trained_true_work_for_stock_models(tmp_path: Path) -> None:
    """After install_offline_weights, a stock anomalib model with pre_trained=True gets ImageNet weights offline."""
    script = (
        "import torch\n"
        "from anomalib_pnpt.backbones import install_offline_weights, load_offline_state_dict\n"
        "install_offline_weights(['tf_efficientnet_lite0'])\n"
        "from anomalib.models import Padim\n"
        "model = Padim(backbone='tf_efficientnet_lite0', layers=['blocks.1'], pre_trained=True, n_features=10)\n"
        "stem = model.model.feature_extractor.feature_extractor.conv_stem.weight\n"
        "assert torch.equal(stem, load_offline_state_dict('tf_efficientnet_lite0')['conv_stem.weight'])\n"
        "print('ok')\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
    assert (tmp_path / "hub" / "models--timm--tf_efficientnet_lite0.in1k" / "refs" / "main").is_file()
