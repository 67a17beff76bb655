# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Pnpt as an anomalib model: pool built automatically, retrieval, detection, checkpoints, ablations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine

from anomalib_pnpt import Pnpt, PnptModel
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.prompt_pool import PromptPoolNotBuiltError
from tests.image_loading import load_image_tensor

SMALL = {"backbone": "tf_efficientnet_lite0", "hidden_dim": 64, "num_layers": 2, "image_size": 128}
# The network alone, for Table VI's switches (not arguments of the anomalib model).
NETWORK = {"backbone": "tf_efficientnet_lite0", "pre_trained": False, "hidden_dim": 64, "num_semantic_tokens": 8}


@pytest.fixture(scope="module")
def trained(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Pnpt, Engine, MultiClassMVTecAD]:
    torch.manual_seed(0)
    datamodule = MultiClassMVTecAD(root=demo_root, num_workers=0, train_batch_size=8, eval_batch_size=16)
    model = Pnpt(**SMALL, training={"learning_rate": 1e-3})
    engine = Engine(
        default_root_dir=tmp_path_factory.mktemp("pnpt"),
        max_epochs=25,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        check_val_every_n_epoch=25,
    )
    engine.fit(model, datamodule=datamodule)
    return model, engine, datamodule


def test_model_builds_its_pool_when_training_starts(trained: tuple) -> None:
    model, _, datamodule = trained
    pool = model.model.prompt_pool
    assert bool(pool.built)
    assert pool.num_classes == 3
    assert pool.counts.tolist() == [7, 7, 7]  # one of 8 per class held out for calibration
    assert model.prompt_categories == datamodule.categories
    # Training reused the cached backbone features after the first pass.
    assert model.feature_cache.hits > 10 * model.feature_cache.misses


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
    pasted[..., 48:72, 48:72] = texture[..., 48:72, 48:72]
    with torch.no_grad():
        clean_out, pasted_out = model(clean), model(pasted)
    # model(...) runs anomalib's whole chain (pre-processing, network, post-processing).
    region = (slice(None), slice(None), slice(48, 72), slice(48, 72))
    assert pasted_out.anomaly_map[region].mean() > clean_out.anomaly_map[region].mean() + 0.05
    assert bool(pasted_out.pred_label)  # above its class's calibrated threshold
    # Normalised scores saturate at 1 above the threshold: compare the raw ones.
    with torch.no_grad():
        raw_clean, raw_pasted = (model.model.predict(model.pre_processor(x)) for x in (clean, pasted))
    assert float(raw_pasted.pred_score) > float(raw_clean.pred_score)


def _normal_test_map(model: Pnpt, images: torch.Tensor) -> torch.Tensor:
    """Mean raw anomaly map (Eq. 8) of each pre-processed image."""
    net = model.model.eval()
    with torch.no_grad():
        features = net.extract_features(images)
        prior = net.retrieve_prior(features).prompts
        prior_reconstruction, self_reconstruction = net.reconstruct(features, prior)
        anomaly_map, _ = net.anomaly_map_generator(
            features, prior_reconstruction, self_reconstruction, images.shape[-2:]
        )
    return anomaly_map.flatten(1).mean(1)


def test_training_brings_the_reconstruction_of_unseen_normal_images_closer(trained: tuple, demo_root: Path) -> None:
    """What training the transformer does: on normal TEST images (never trained on), the trained network's
    reconstructions deviate less from the images' features than those of the same network untrained (same pool).
    The pasted-defect and retrieval tests pass with the class-mean prior alone; this one needs the network.

    (Measured here: the trained network still deviates more than the prior itself, 1.21 against 0.53, the
    accuracy issue's finding that PNPT's transformer does not beat its own prior.)"""
    model, _, _ = trained
    paths = sorted(demo_root.glob("*/test/good/*.png"))
    images = model.pre_processor.transform(torch.cat([load_image_tensor(path) for path in paths]))
    torch.manual_seed(0)
    untrained = Pnpt(**SMALL, training={"learning_rate": 1e-3})
    untrained.model.prompt_pool.load_state_dict(model.model.prompt_pool.state_dict())
    trained_map, untrained_map = _normal_test_map(model, images), _normal_test_map(untrained, images)
    assert float(trained_map.mean()) < 0.5 * float(untrained_map.mean())
    assert bool((trained_map < untrained_map).all())


def test_checkpoint_round_trip_gives_same_scores(trained: tuple, tmp_path: Path) -> None:
    model, engine, _ = trained
    path = tmp_path / "pnpt.ckpt"
    engine.trainer.save_checkpoint(path)
    loaded = Pnpt.load_from_checkpoint(path).eval()
    model.eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected, got = model(images), loaded(images)
    assert torch.allclose(expected.pred_score, got.pred_score, atol=1e-6)
    assert torch.allclose(expected.anomaly_map, got.anomaly_map, atol=1e-6)
    assert loaded.prompt_categories == model.prompt_categories


def test_test_run_reports_retrieval_accuracy(trained: tuple) -> None:
    model, engine, datamodule = trained
    results = engine.test(model, datamodule=datamodule)
    assert results[0]["retrieval_accuracy"] == 1.0
    assert results[0]["per_class/mean/image_AUROC"] > 0.8


def test_retrieval_accuracy_matches_classes_by_name_on_a_subset(trained: tuple, demo_root: Path) -> None:
    """The subset datamodule numbers tiles/weave 0/1; the checkpoint's pool has them at 1/2."""
    model, engine, _ = trained
    subset = MultiClassMVTecAD(root=demo_root, categories=["tiles", "weave"], num_workers=0, eval_batch_size=16)
    results = engine.test(model, datamodule=subset)
    assert results[0]["retrieval_accuracy"] == 1.0


def test_unbuilt_model_fails_clearly() -> None:
    model = Pnpt(**SMALL, pre_trained=False).eval()
    with pytest.raises(PromptPoolNotBuiltError, match="Train the model"):
        model(torch.rand(1, 3, 128, 128))


def _perturb(net: PnptModel, switch: str) -> None:
    """Change, in place, the component a switch turns off (the prior prompts, the semantic tokens, CSCD)."""
    with torch.no_grad():
        if switch == "use_prior":  # the stored class priors; the retrieval keys stay, so the class stays
            for index in range(len(net.feature_extractor.layers)):
                getattr(net.prompt_pool, f"prompt_{index}").add_(
                    torch.randn_like(getattr(net.prompt_pool, f"prompt_{index}"))
                )
        elif switch == "use_semantic_tokens":
            net.semantic_tokens.add_(torch.randn_like(net.semantic_tokens))
        else:
            for parameter in net.cscd.parameters():
                parameter.add_(0.5 * torch.randn_like(parameter))


def _network(**switches: bool) -> tuple[PnptModel, torch.Tensor]:
    """A small PNPT network with a two-class pool built from four random images (returned, pre-processed)."""
    net = PnptModel(**NETWORK, num_heads=4, num_layers=2, **switches)
    images = (torch.rand(4, 3, 128, 128) - 0.5) / 0.5  # Lite0's normalisation
    with torch.no_grad():
        features = net.extract_features(images)
        net.prompt_pool.begin(2, net.key_dim(features), [level.shape[1:] for level in features])
        net.prompt_pool.accumulate(torch.tensor([0, 1, 0, 1]), net.global_coding(features), features)
        net.prompt_pool.finish()
    return net, images


@pytest.mark.parametrize("switch", ["use_prior", "use_semantic_tokens", "use_cscd"])
def test_ablation_switch_takes_its_component_out_of_the_prediction(switch: str) -> None:
    """Table VI's switches: with the switch on, changing the component changes the map; off, it changes nothing.
    Training still runs without it."""
    for enabled in (True, False):
        torch.manual_seed(0)
        net, images = _network(**{switch: enabled})
        net.train()
        net.training_loss(net.extract_features(images)).backward()
        net.eval()
        with torch.no_grad():
            before = net(images).anomaly_map
            _perturb(net, switch)
            after = net(images).anomaly_map
        assert (not torch.allclose(before, after, atol=1e-6)) == enabled, (switch, enabled)


def test_without_hpe_one_backbone_level_single_patches() -> None:
    net, images = _network(use_hpe=False)
    assert len(net.feature_extractor.layers) == 1
    assert list(net.hpe.patch_sizes) == [1]
    assert net.eval()(images).anomaly_map.shape == (4, 1, 128, 128)


def test_prior_residual_starts_as_the_prior_and_training_corrects_it() -> None:
    """With ``prior_residual`` the untrained network's map is exactly the prior's Eq. 8 map (a zero correction);
    a training step moves it off the prior. Without it, the untrained network's map is not the prior's."""
    maps = {}
    for residual in (True, False):
        torch.manual_seed(0)
        model = Pnpt(**SMALL, pre_trained=False, prior_residual=residual)
        images = model.pre_processor.transform(torch.rand(4, 3, 128, 128))
        model.build_prompt_pool([(images, torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])], num_classes=2)
        net = model.model.eval()
        with torch.no_grad():
            features = net.extract_features(images)
            prior = net.retrieve_prior(features).prompts
            prior_map = net.anomaly_map_generator(features, None, prior, image_size=images.shape[-2:])[0]
            maps[residual] = net(images).anomaly_map
        assert torch.allclose(maps[residual], prior_map, atol=1e-5) == residual
    torch.manual_seed(0)
    model = Pnpt(**SMALL, pre_trained=False, prior_residual=True)
    model.build_prompt_pool([(images, torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])], num_classes=2)
    optimizer = torch.optim.SGD(model.model.parameters(), lr=0.1)
    for _ in range(2):  # the first step moves HPE^-1 off zero, the second the layers before it
        model.model.train()
        model.model.training_loss(model.model.extract_features(images)).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        assert not torch.allclose(model.model.eval()(images).anomaly_map, maps[True], atol=1e-5)


def test_prior_residual_needs_a_prior() -> None:
    with pytest.raises(ValueError, match="needs use_prior"):
        PnptModel(**NETWORK, prior_residual=True, use_prior=False)
