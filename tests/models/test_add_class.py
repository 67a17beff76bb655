# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A class added to a trained model from normal images, without training; an unknown product flagged until then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

from tests.calibrated_models import (
    MODELS,
    assert_openvino_export_scores_as_torch,
    calibrated_memory_model,
    calibrated_model,
    class_images,
)

# The two networks, and OneNIP fused with a patch memory (which scores an added class by its memory).
NAMES = [*MODELS, "OneNip+memory"]


def _model(name: str) -> torch.nn.Module:
    return calibrated_memory_model("OneNip") if name == "OneNip+memory" else calibrated_model(name)


def _grey_images(count: int, seed: int = 5) -> torch.Tensor:
    """A fourth kind of part: no dominant colour channel."""
    generator = torch.Generator().manual_seed(seed)
    return 0.35 + 0.3 * torch.rand(count, 3, 128, 128, generator=generator).mean(1, keepdim=True).expand(-1, 3, -1, -1)


def _retrieved(model: torch.nn.Module, images: torch.Tensor) -> list[str]:
    with torch.no_grad():
        ids = model(images).pred_category_id
    return [model.prompt_categories[int(i)] for i in ids]


@pytest.mark.parametrize("name", NAMES)
def test_added_class_is_retrieved_and_calibrated_and_the_others_are_unchanged(name: str) -> None:
    model = _model(name)
    known = class_images([0, 1, 2])
    with torch.no_grad():
        before = model(known)
    grey = _grey_images(10)
    summary = model.add_class("grey", grey)
    assert summary == {
        "class": "grey",
        "index": 3,
        "prompt_images": 8,
        "calibration_images": 2,
        "retrieved_share": 1.0,
        "scored_by": "memory" if name == "OneNip+memory" else "prompt",  # the network never trained on it
    }
    assert model.prompt_categories == ["a", "b", "c", "grey"]
    assert model.model.prompt_pool.num_classes == 4
    assert model.post_processor.num_classes == 4
    # New parts of the new class are retrieved as it ...
    assert _retrieved(model, _grey_images(4, seed=9)) == ["grey"] * 4
    # ... and judged by its own calibration: the statistics of the held-out images (the first and the last).
    with torch.no_grad():
        raw = model.predict_images(model.pre_processor.transform(grey[[0, 9]]))
    statistics = model.post_processor.class_statistics()
    assert float(statistics["image_threshold"][3]) == pytest.approx(float(raw.pred_score.median()), rel=1e-5)
    assert float(statistics["image_max"][3]) == pytest.approx(float(raw.pred_score.max()), rel=1e-5)
    # The known classes keep their retrieval, scores and labels.
    with torch.no_grad():
        after = model(known)
    assert torch.equal(after.pred_category_id, before.pred_category_id)
    assert torch.allclose(after.pred_score, before.pred_score)
    assert torch.equal(after.pred_label, before.pred_label)


@pytest.mark.parametrize("name", NAMES)
def test_remove_then_add_back_restores_retrieval(name: str) -> None:
    model = _model(name)
    model.remove_class("b")
    assert model.prompt_categories == ["a", "c"]
    assert model.model.prompt_pool.num_classes == 2
    assert model.post_processor.num_classes == 2
    assert _retrieved(model, class_images([0, 2])) == ["a", "c"]
    model.add_class("b", class_images([1] * 6, seed=3))
    assert _retrieved(model, class_images([0, 1, 2], seed=4)) == ["a", "b", "c"]
    # Replacing keeps one entry per class.
    model.add_class("b", class_images([1] * 6, seed=6))
    assert model.prompt_categories == ["a", "c", "b"]
    assert model.model.prompt_pool.num_classes == 3
    with pytest.raises(KeyError, match="not in the model"):
        model.remove_class("zzz")


@pytest.mark.parametrize("scoring", ["prompt", "network"])
def test_pnpt_scores_a_class_it_never_trained_on_by_its_prior_alone(scoring: str) -> None:
    """PNPT's network never learnt to reconstruct an added product: by default its prior alone scores it."""
    model = calibrated_model("Pnpt")
    model.model.untrained_class_scoring = scoring
    model.add_class("grey", _grey_images(10))
    assert model.model.prompt_pool.trained.tolist() == [True, True, True, False]
    images = model.pre_processor.transform(torch.cat([class_images([0]), _grey_images(2, seed=9)]))
    net = model.model
    with torch.no_grad():
        raw = net.predict(images)
        class_ids = raw.class_id
        features = net.extract_features(images)
        prior = net.retrieve_prior(features).prompts
        reconstruction = net.reconstruct(features, prior)
        network_map, network_score = net.anomaly_map_generator(features, *reconstruction, images.shape[-2:])
        prior_map, prior_score = net.anomaly_map_generator(features, None, prior, images.shape[-2:])
    assert class_ids.tolist() == [0, 3, 3]
    assert not torch.allclose(prior_score[1:], network_score[1:])
    assert torch.allclose(raw.pred_score[0], network_score[0])  # a trained class: the network, always
    expected_score, expected_map = (prior_score, prior_map) if scoring == "prompt" else (network_score, network_map)
    assert torch.allclose(raw.pred_score[1:], expected_score[1:])
    assert torch.allclose(raw.anomaly_map[1:], expected_map[1:])


@pytest.mark.parametrize("scoring", ["prompt", "network"])
def test_onenip_scores_a_class_it_never_trained_on_by_its_prompt_images_nearest_patches(scoring: str) -> None:
    model = calibrated_model("OneNip")
    model.model.untrained_class_scoring = scoring
    model.add_class("grey", _grey_images(10))
    net = model.model
    images = model.pre_processor.transform(torch.cat([class_images([0]), _grey_images(2, seed=9)]))
    with torch.no_grad():
        raw = net.predict(images)
        features = net.extract_features(images)
        nearest = net.prompt_patch_reconstruction(features, net.class_prompt_patches(raw.class_id))
        prompt_map, prompt_score = net.anomaly_map_generator(features, nearest, None, images.shape[-2:])
    assert raw.class_id.tolist() == [0, 3, 3]
    assert not torch.allclose(raw.pred_score[0], prompt_score[0])  # a trained class: the network, always
    if scoring == "prompt":
        assert torch.allclose(raw.pred_score[1:], prompt_score[1:])
        assert torch.allclose(raw.anomaly_map[1:], prompt_map[1:])
    else:
        assert not torch.allclose(raw.pred_score[1:], prompt_score[1:])


def test_a_network_with_memory_scores_a_class_it_never_trained_on_by_its_memory_alone() -> None:
    model = calibrated_memory_model("OneNip")
    model.add_class("grey", _grey_images(10))
    memory = model.memory
    # 10 % of the 8 prompt images' 16 x 16 patches at stride 8, all of them in the memory (none held out)
    assert memory.class_memory.sizes(4)[3] == round(0.1 * 8 * 256)
    assert float(memory.class_memory.normal_scales[3]) == 1.0
    images = model.pre_processor.transform(torch.cat([class_images([0]), _grey_images(2, seed=9)]))
    with torch.no_grad():
        raw = model.predict_images(images)
        network = model.model.predict(images)
        memory_map = memory.memory_map(model.memory_features(images), raw.class_id, images.shape[-2:])
    assert raw.class_id.tolist() == [0, 3, 3]
    assert torch.allclose(raw.anomaly_map[1:], memory_map[1:])
    assert torch.allclose(raw.pred_score[1:], model.model.anomaly_map_generator.image_score(memory_map)[1:])
    assert not torch.allclose(raw.anomaly_map[1:], network.anomaly_map[1:])


@pytest.mark.parametrize("name", ["OneNip", "OneNip+memory"])
def test_the_export_scores_an_added_class_as_torch_does(name: str, tmp_path: Path) -> None:
    """The graph holds both routes and chooses by the pool's flags (PNPT's: the CLI test above)."""
    model = _model(name)
    model.add_class("grey", _grey_images(10))
    images = torch.cat([class_images([0], seed=4), _grey_images(2, seed=9)])
    assert_openvino_export_scores_as_torch(model, images, tmp_path)


def test_the_prompt_route_uses_every_prompt_image_of_the_retrieved_class() -> None:
    net = calibrated_model("OneNip").model
    pool = net.prompt_pool
    features = torch.randn(6, 4, 2, 2)
    pool.entries_per_class = 2  # prompts_per_class = 2
    pool.set_entries(torch.tensor([0, 0, 1, 1, 2, 2]), features.mean(dim=(-2, -1)), [features])
    patches = net.class_prompt_patches(torch.tensor([1, 0]))
    assert patches.shape == (2, 8, 4)
    assert torch.equal(patches[0], features[2:4].permute(0, 2, 3, 1).reshape(8, 4))  # class 1's two images
    assert torch.equal(patches[1], features[0:2].permute(0, 2, 3, 1).reshape(8, 4))


def test_prompt_patch_reconstruction_takes_each_locations_nearest_prompt_patch() -> None:
    from anomalib_pnpt.models.onenip.torch_model import OneNipModel

    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(2, 18, 8, generator=generator)  # two prompt images of 3 x 3 locations, 8 channels
    picked = patches[:, torch.randperm(18, generator=generator)[:9]]  # a query made of 9 of them, any image
    query = picked.transpose(1, 2).reshape(2, 8, 3, 3)
    assert torch.equal(OneNipModel.prompt_patch_reconstruction(query, patches), query)
    noisy = query + 0.01 * torch.randn(query.shape, generator=generator)
    assert torch.equal(OneNipModel.prompt_patch_reconstruction(noisy, patches), query)


@pytest.mark.parametrize("name", NAMES)
def test_which_classes_the_network_trained_on_survives_re_adding_and_checkpoints(name: str, tmp_path: Path) -> None:
    model = _model(name)
    model.remove_class("b")
    summary = model.add_class("b", class_images([1] * 6, seed=3))  # a trained class given new prompts stays trained
    assert summary["scored_by"] == "network"
    model.add_class("grey", _grey_images(10))
    pool = model.model.prompt_pool
    assert model.prompt_categories == ["a", "c", "b", "grey"]
    assert pool.trained.tolist() == [True] * pool.entries_per_class * 3 + [False] * pool.entries_per_class
    trainer = Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = type(model).load_from_checkpoint(tmp_path / "model.ckpt")
    assert loaded.trained_categories == ["a", "b", "c"]
    assert loaded.model.prompt_pool.trained.tolist() == pool.trained.tolist()
    if name == "OneNip+memory":  # the patch memories come back; an added class's goes with it
        sizes = model.memory.class_memory.sizes(4)
        assert loaded.memory.class_memory.sizes(4) == sizes
        assert torch.equal(loaded.memory.class_memory.patches, model.memory.class_memory.patches)
        model.remove_class("grey")
        assert model.memory.class_memory.sizes(3) == sizes[:3]


def test_too_few_images_and_uncalibrated_models_fail_clearly() -> None:
    model = calibrated_model("Pnpt")
    with pytest.raises(ValueError, match="at least 3"):
        model.add_class("grey", _grey_images(2))
    cls, arguments = MODELS["Pnpt"]
    fresh = cls(backbone="tf_efficientnet_lite0", pre_trained=False, image_size=128, **arguments)
    with pytest.raises(RuntimeError, match="trained and calibrated"):
        fresh.add_class("grey", _grey_images(5))


def test_cli_adds_a_class_from_a_folder_and_the_export_contains_it(tmp_path: Path) -> None:
    model = calibrated_model("Pnpt")
    trainer = Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    folder = tmp_path / "grey"
    folder.mkdir()
    for index, image in enumerate(_grey_images(10)):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    output = tmp_path / "with_grey.ckpt"
    result = subprocess.run(
        [
            *(str(Path(sys.executable).with_name("anomalib-pnpt")), "add-class", "--ckpt_path", str(checkpoint)),
            *("--name", "grey", "--images", str(folder), "--output", str(output)),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["classes"] == ["a", "b", "c", "grey"]
    assert summary["retrieved_share"] == 1.0

    from anomalib.engine import Engine

    from anomalib_pnpt import Pnpt
    from anomalib_pnpt.deploy import MultiClassOpenVINOInferencer

    loaded = Pnpt.load_from_checkpoint(output).eval()
    assert loaded.prompt_categories == ["a", "b", "c", "grey"]
    exported = Engine(default_root_dir=tmp_path).export(
        loaded, export_type="openvino", export_root=tmp_path / "export", input_size=(128, 128)
    )
    inferencer = MultiClassOpenVINOInferencer(exported)
    new_part = tmp_path / "new_part.png"
    Image.fromarray((_grey_images(1, seed=9)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(new_part)
    prediction = inferencer.predict(new_part)
    assert prediction.pred_category == ["grey"]
    # The graph normalises with the new class's own statistics, as the checkpoint's forward does.
    with torch.no_grad():
        expected = loaded(torch.from_numpy(np.asarray(Image.open(new_part))).permute(2, 0, 1)[None].float() / 255)
    exported_score = float(np.asarray(prediction.pred_score).reshape(-1)[0])
    assert exported_score == pytest.approx(float(expected.pred_score), abs=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_an_unknown_product_is_flagged_until_its_class_is_added(name: str) -> None:
    model = calibrated_model(name)  # calibrated on validation-like images of a, b, c: bounds fitted there
    with torch.no_grad():
        known, stranger = model(class_images([0, 1, 2], seed=4)), model(_grey_images(4, seed=9))
    assert not known.pred_unknown.any()
    assert stranger.pred_unknown.all()
    assert stranger.pred_label.all() and bool((stranger.pred_score == 1).all())  # a line must stop
    model.add_class("grey", _grey_images(10))
    with torch.no_grad():
        now = model(_grey_images(4, seed=9))
    assert not now.pred_unknown.any()
    assert [model.prompt_categories[int(i)] for i in now.pred_category_id] == ["grey"] * 4


@pytest.mark.parametrize("name", list(MODELS))
def test_exports_give_the_same_unknown_class_decision(
    name: str, openvino_export: Callable[[str], tuple[torch.nn.Module, Path]]
) -> None:
    from anomalib.deploy import OpenVINOInferencer

    from anomalib_pnpt.deploy import MultiClassOpenVINOInferencer

    model, path = openvino_export(name)
    images = torch.cat([class_images([0, 1, 2], seed=4), _grey_images(2, seed=9)])
    with torch.no_grad():
        expected = model(images)
    assert expected.pred_unknown.tolist() == [False, False, False, True, True]
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    ours, stock = MultiClassOpenVINOInferencer(path, config=config), OpenVINOInferencer(path, config=config)
    for index, image in enumerate(images):
        array = image.permute(1, 2, 0).numpy()
        prediction = ours.predict(array)
        assert bool(prediction.pred_unknown.reshape(-1)[0]) == bool(expected.pred_unknown[index])
        assert float(prediction.pred_category_similarity.reshape(-1)[0]) == pytest.approx(
            float(expected.pred_category_similarity[index]), abs=1e-5
        )
        # anomalib's own inferencer sees the decision where it matters: the label.
        assert bool(np.asarray(stock.predict(array).pred_label).reshape(-1)[0]) == bool(expected.pred_label[index])
