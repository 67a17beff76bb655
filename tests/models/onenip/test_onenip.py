# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNip as an anomalib model: pool built automatically, retrieval, detection, calibration, ablations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine

from anomalib_pnpt import OneNip, OneNipModel
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.prompt_pool import PromptPoolNotBuiltError
from tests.image_loading import load_image_tensor

SMALL = {"backbone": "tf_efficientnet_lite0", "image_size": 128, "hidden_dim": 64, "num_encoder_layers": 1}
SMALL["num_decoder_layers"] = 1
# The network's own arguments, for the paper's Table 4a switches (not arguments of the anomalib model).
NETWORK = {**SMALL, "pre_trained": False, "num_heads": 4, "ffn_dim": 128, "refiner_channels": 16}


@pytest.fixture(scope="module")
def trained(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[OneNip, Engine, MultiClassMVTecAD]:
    torch.manual_seed(0)
    datamodule = MultiClassMVTecAD(root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    model = OneNip(**SMALL, training={"learning_rate": 1e-3})
    engine = Engine(
        default_root_dir=tmp_path_factory.mktemp("onenip"),
        max_epochs=15,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        check_val_every_n_epoch=15,
    )
    engine.fit(model, datamodule=datamodule)
    return model, engine, datamodule


def test_model_builds_its_pool_and_bank_when_training_starts(trained: tuple) -> None:
    model, _, datamodule = trained
    pool = model.model.prompt_pool
    assert bool(pool.built)
    assert pool.num_classes == 3  # one prompt image per class
    assert pool.counts.tolist() == [1, 1, 1]
    counts = model.model.training_prompt_counts.tolist()  # up to 32 training prompts per class
    assert len(counts) == 3 and all(4 <= count <= 32 for count in counts)
    assert model.prompt_categories == datamodule.categories
    # The chosen prompt is a real training image of its class: its features are in the training bank.
    for class_id in range(3):
        bank = model.model.training_prompts[class_id]
        prompt = pool.prompts[0][class_id]
        assert any(torch.allclose(prompt, member) for member in bank)
    assert model.feature_cache.hits > 10 * model.feature_cache.misses


def test_refiner_scale_calibrated_on_training_data(trained: tuple) -> None:
    model, _, _ = trained
    scale = float(model.model.anomaly_map_generator.refiner_scale)
    assert scale != 1.0 and scale > 0
    # It is the largest reconstruction error over normal training images (calibration_images of them).
    model.eval()
    images = [model.pre_processor.transform(torch.rand(2, 3, 128, 128)) for _ in range(2)]
    with torch.no_grad():
        largest = max(float(model.model.reconstruction_error(batch).amax()) for batch in images)
    assert model.calibrate_normal_scale([(batch,) for batch in images]) == pytest.approx(largest)
    assert float(model.model.anomaly_map_generator.refiner_scale) == pytest.approx(largest)
    model.model.anomaly_map_generator.refiner_scale.fill_(scale)


def test_refiner_scale_recalibrated_from_a_datamodule_as_after_training(trained: tuple) -> None:
    """The public entry point (used after a pool is rebuilt) gives the scale training left, from the same images."""
    model, _, datamodule = trained
    scale = float(model.model.anomaly_map_generator.refiner_scale)
    model.model.anomaly_map_generator.refiner_scale.fill_(1.0)
    model.train()
    with torch.no_grad():
        assert model.calibrate_normal_scale_from(datamodule) == pytest.approx(scale, rel=1e-5)
    assert model.training  # the caller's mode is kept
    assert float(model.model.anomaly_map_generator.refiner_scale) == pytest.approx(scale, rel=1e-5)
    model.eval()


def test_the_refiners_map_enters_the_anomaly_map_with_weight_alpha_times_the_scale(trained: tuple) -> None:
    """``S = (1 - alpha) S_rec + alpha s M_hat``: a refiner that is sure everywhere adds ``alpha s``."""
    model, _, _ = trained
    network = model.model.eval()
    images = model.pre_processor.transform(torch.rand(2, 3, 128, 128))
    head = network.refiner.head
    bias = head.bias.detach().clone()
    maps = []
    with torch.no_grad():
        for certain in (-30.0, 30.0):  # refiner probability ~0, then ~1, everywhere
            head.bias.fill_(certain)
            maps.append(network.predict(images).anomaly_map)
        head.bias.copy_(bias)
    generator = network.anomaly_map_generator
    expected = generator.alpha * float(generator.refiner_scale)
    torch.testing.assert_close(maps[1] - maps[0], torch.full_like(maps[0], expected), rtol=1e-3, atol=1e-3)


def test_pool_retrieves_the_right_class(trained: tuple, demo_root: Path) -> None:
    model, _, datamodule = trained
    model.eval()
    for index, category in enumerate(datamodule.categories):
        for path in sorted((demo_root / category / "test").rglob("*.png")):
            images = model.pre_processor.transform(load_image_tensor(path))
            class_ids = model.model.predict(images).class_id
            assert int(class_ids) == index, path


def test_pasted_defect_scores_higher_than_the_clean_image(trained: tuple, demo_root: Path) -> None:
    model, _, _ = trained
    model.eval()
    clean = load_image_tensor(demo_root / "disc" / "test" / "good" / "000.png")
    texture = load_image_tensor(demo_root / "weave" / "train" / "good" / "000.png")
    pasted = clean.clone()
    pasted[..., 48:80, 48:80] = texture[..., 48:80, 48:80]
    with torch.no_grad():
        clean_out, pasted_out = model(clean), model(pasted)
    region = (slice(None), slice(None), slice(48, 80), slice(48, 80))
    assert pasted_out.anomaly_map[region].mean() > clean_out.anomaly_map[region].mean() + 0.05
    assert bool(pasted_out.pred_label)  # above its class's calibrated threshold
    # Normalised scores saturate at 1 above the threshold: compare the raw ones.
    with torch.no_grad():
        raw_clean, raw_pasted = (model.model.predict(model.pre_processor(x)) for x in (clean, pasted))
    assert float(raw_pasted.pred_score) > float(raw_clean.pred_score)


def test_checkpoint_round_trip_gives_same_scores(trained: tuple, tmp_path: Path) -> None:
    model, engine, _ = trained
    path = tmp_path / "onenip.ckpt"
    engine.trainer.save_checkpoint(path)
    loaded = OneNip.load_from_checkpoint(path).eval()
    model.eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected, got = model(images), loaded(images)
    assert torch.allclose(expected.pred_score, got.pred_score, atol=1e-6)
    assert torch.allclose(expected.anomaly_map, got.anomaly_map, atol=1e-6)
    assert loaded.prompt_categories == model.prompt_categories
    assert float(loaded.model.anomaly_map_generator.refiner_scale) == float(
        model.model.anomaly_map_generator.refiner_scale
    )
    # The per-class calibration travels with the checkpoint (and so into an export).
    for name, values in model.post_processor.class_statistics().items():
        assert torch.allclose(loaded.post_processor.class_statistics()[name], values, equal_nan=True)
    # The training-prompt bank is not saved: resuming training must rebuild it before the first step.
    assert model.prompt_pool_ready() and bool(loaded.model.prompt_pool.built)
    assert not loaded.prompt_pool_ready()


def test_test_run_reports_retrieval_accuracy(trained: tuple) -> None:
    model, engine, datamodule = trained
    results = engine.test(model, datamodule=datamodule)
    assert results[0]["retrieval_accuracy"] == 1.0
    assert results[0]["per_class/mean/image_AUROC"] > 0.8


def test_unbuilt_model_fails_clearly() -> None:
    model = OneNip(**SMALL, pre_trained=False).eval()
    with pytest.raises(PromptPoolNotBuiltError, match="Train the model"):
        model(torch.rand(1, 3, 128, 128))


def test_refiner_needs_restoration() -> None:
    with pytest.raises(ValueError, match="needs use_restoration"):
        OneNipModel(**NETWORK, use_restoration=False)


@pytest.mark.parametrize(
    "switch",
    [
        {},
        {"prompt_mode": "none"},
        {"prompt_mode": "static"},
        {"use_refiner": False},
        {"use_refiner": False, "use_restoration": False},
        {"prompts_per_class": 2},
    ],
)
def test_ablation_switches_take_their_component_out(switch: dict) -> None:
    """Each switch removes its component from training and from the map; the rest keeps working."""
    torch.manual_seed(0)
    model = OneNip(**SMALL, pre_trained=False)
    model.model = OneNipModel(**NETWORK, **switch)  # the switches are the network's
    images = model.pre_processor.transform(torch.rand(4, 3, 128, 128))
    class_ids = torch.tensor([0, 1, 0, 1])
    model.build_prompt_pool([(images, class_ids, ["a", "b", "c", "d"])], num_classes=2)
    model.train()
    features = model.model.extract_features(images)
    synthetic, masks = model.anomaly_generator(images) if model.model.use_restoration else (None, None)
    synthetic_features = model.model.extract_features(synthetic) if synthetic is not None else None
    losses = model.model.training_loss(features, class_ids, images.shape[-2:], synthetic_features, masks)
    losses["loss"].backward()
    assert ("dice" in losses) == switch.get("use_refiner", True)
    assert ("restoration" in losses) == switch.get("use_restoration", True)
    model.eval()
    net = model.model
    with torch.no_grad():
        output = net.predict(images)
        # The refiner's map is in the anomaly map exactly when the refiner is on.
        features = net.extract_features(images)
        reconstruction = net.reconstruct(features, net.inference_prompts(features)[1])
        unrefined, _ = net.anomaly_map_generator(features, reconstruction, None, images.shape[-2:])
        assert (not torch.allclose(output.anomaly_map, unrefined)) == switch.get("use_refiner", True)
        # The prompt reaches the map unless prompt_mode is "none" (the class is still retrieved by the keys).
        for prompt in net.prompt_pool.prompts:
            prompt.add_(torch.randn_like(prompt))
        perturbed = net.predict(images)
    assert (not torch.allclose(output.anomaly_map, perturbed.anomaly_map)) == (switch.get("prompt_mode") != "none")
    # every pool slot's own prompt retrieves that slot's class
    prompts = net.prompt_pool.prompts[0]
    retrieved = net.retrieve_prompts(prompts).class_ids
    assert retrieved.tolist() == [slot // net.prompts_per_class for slot in range(len(prompts))]
