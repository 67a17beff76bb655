# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""OneNIP's pieces: neighbour mask, decoder, refiner, Dice loss, anomaly map, synthetic anomalies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from anomalib_pnpt.models.onenip.anomaly_map import OneNipAnomalyMap
from anomalib_pnpt.models.onenip.components import (
    BidirectionalDecoderLayer,
    EncoderLayer,
    LearnedPositionEmbedding,
    NeighborMask,
    neighbor_mask,
)
from anomalib_pnpt.models.onenip.loss import OneNipLoss, dice_loss
from anomalib_pnpt.models.onenip.refiner import Refiner
from anomalib_pnpt.synthetic_anomalies import SyntheticAnomalyGenerator


@pytest.mark.parametrize("size", [3, 4, 7])
def test_neighbor_mask_forbids_exactly_the_k_by_k_window(size: int) -> None:
    height, width = 14, 12
    mask = neighbor_mask(height, width, size)
    before = (size - 1) // 2
    for query in [0, 5 * width + 6, height * width - 1, 13 * width + 2]:
        row, col = divmod(query, width)
        expected = torch.zeros(height, width, dtype=torch.bool)
        expected[max(0, row - before) : row - before + size, max(0, col - before) : col - before + size] = True
        assert torch.equal(mask[query].view(height, width), expected)
    interior = 7 * width + 6
    assert int(mask[interior].sum()) == size * size


def test_neighbor_mask_module_is_additive_and_default_half_the_grid() -> None:
    module = NeighborMask(14, 14)
    assert module.size == 7
    mask = module()
    assert set(mask.unique().tolist()) == {float("-inf"), 0.0}
    assert int(torch.isinf(mask[7 * 14 + 7]).sum()) == 49
    # The mask really blocks attention: a token's own value cannot reach its output.
    layer = EncoderLayer(dim=8, num_heads=2, ffn_dim=16).eval()
    tokens = torch.zeros(1, 196, 8)
    attention = layer.self_attention.attention
    values = tokens.clone()
    values[0, 7 * 14 + 7] = 100.0
    _, weights = attention(tokens, tokens, values, attn_mask=mask, need_weights=True)
    assert float(weights[0, 7 * 14 + 7, 7 * 14 + 7]) == 0.0


def test_decoder_step_c_updates_the_image_stream_from_prompt_tokens_outside_its_neighbourhood() -> None:
    """Eq. 3 (c): image tokens attend to the updated prompt tokens; the neighbour mask hides a token's own
    neighbourhood (UniAD's anti-shortcut mask), so a change of a neighbouring prompt token cannot reach it."""
    torch.manual_seed(0)
    grid, dim = (6, 6), 16
    pos = LearnedPositionEmbedding(*grid, dim)()
    mask = NeighborMask(*grid, size=3)()
    decoder = BidirectionalDecoderLayer(dim, 4, 32).eval()
    image, prompt = torch.rand(1, 36, dim), torch.rand(1, 36, dim)
    with torch.no_grad():
        updated, _ = decoder(image, prompt, pos, mask)
        assert not torch.allclose(updated, image)  # step (c) changed the image stream
        near, far, change = prompt.clone(), prompt.clone(), 5 * torch.randn(dim)  # not constant: LN would remove it
        near[0, 1] += change  # inside token 0's 3 x 3 neighbourhood (row 0, column 1)
        far[0, 35] += change  # outside it (row 5, column 5)
        from_near, _ = decoder(image, near, pos, mask)
        from_far, _ = decoder(image, far, pos, mask)
    torch.testing.assert_close(from_near[0, 0], updated[0, 0])  # the neighbour is masked ...
    assert not torch.allclose(from_near[0, 35], updated[0, 35])  # ... for token 0, not for a distant token
    assert not torch.allclose(from_far[0, 0], updated[0, 0])  # the image reads the prompt outside it


def test_encoder_shapes_and_position_embedding() -> None:
    pos = LearnedPositionEmbedding(4, 5, 16)()
    assert pos.shape == (20, 16)
    encoder = EncoderLayer(16, 4, 32)
    assert encoder(torch.rand(3, 20, 16), pos, NeighborMask(4, 5, size=2)()).shape == (3, 20, 16)


def test_refiner_output_is_a_probability_map_at_input_size() -> None:
    refiner = Refiner(in_channels=10, channels=8)
    output = refiner(torch.randn(2, 10, 14, 14), image_size=(224, 224))
    assert output.shape == (2, 1, 224, 224)
    assert float(output.min()) >= 0 and float(output.max()) <= 1


def test_dice_loss_values() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, 2:4] = 1
    assert float(dice_loss(target, target)) == pytest.approx(0.0)
    assert float(dice_loss(torch.zeros_like(target), target)) == pytest.approx(1 - 1 / 5)
    # all-normal batch: any positive prediction is penalised
    assert float(dice_loss(torch.full((1, 1, 8, 8), 0.5), torch.zeros(1, 1, 8, 8))) > 0.9
    losses = OneNipLoss(dice_weight=0.5)(
        torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), torch.zeros(1, 1, 8, 8), target
    )
    assert float(losses["loss"]) == pytest.approx(1.0 + 0.0 + 0.5 * (1 - 1 / 5))


def test_per_image_dice_charges_a_false_alarm_on_a_normal_image_fully() -> None:
    """Batch Dice dilutes a normal image's false alarm by the other image's hit; per-image Dice does not."""
    target = torch.zeros(2, 1, 8, 8)
    target[1, :, 2:6, 2:6] = 1  # image 0 normal, image 1 anomalous
    prediction = target.clone()
    prediction[0, :, 0:2, 0:2] = 1  # a 4-pixel false alarm on the normal image
    batch, per_image = float(dice_loss(prediction, target)), float(dice_loss(prediction, target, per_image=True))
    assert batch == pytest.approx(1 - 33 / 37)  # (2 * 16 + 1) / (20 + 16 + 1)
    assert per_image == pytest.approx(((1 - 1 / 5) + 0.0) / 2)  # normal image: 1 - 1 / (4 + 1); anomalous: 0
    assert per_image > 3 * batch
    losses = OneNipLoss(dice_weight=1.0, dice_per_image=True)(
        torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 4), None, prediction, target
    )
    assert float(losses["dice"]) == pytest.approx(per_image)


def test_grey_textures_carry_no_colour(tmp_path: Path) -> None:
    torch.manual_seed(0)
    texture_dir = tmp_path / "dtd" / "images" / "red"
    texture_dir.mkdir(parents=True)
    red = torch.zeros(64, 64, 3)
    red[..., 0] = (torch.arange(64)[:, None] % 8 < 4).float()
    Image.fromarray((red.numpy() * 255).astype("uint8")).save(texture_dir / "a.png")
    grey_parts = _normalised(torch.rand(8, 1, 64, 64).expand(-1, 3, -1, -1))  # grey images, like magnetic tiles
    for grey_probability, has_colour in ((1.0, False), (0.0, True)):
        generator = SyntheticAnomalyGenerator(
            texture_dir=tmp_path / "dtd", cutpaste_probability=0.0, grey_texture_probability=grey_probability
        )
        augmented, _ = generator(grey_parts)
        colour = float((augmented.amax(dim=1) - augmented.amin(dim=1)).max())
        assert (colour > 0.1) == has_colour


def test_anomaly_map_fuses_refiner_with_calibrated_scale_and_pools_the_score() -> None:
    generator = OneNipAnomalyMap(alpha=0.5, score_pool=4)
    features = torch.zeros(1, 2, 4, 4)
    reconstruction = features.clone()
    refined = torch.zeros(1, 1, 16, 16)
    refined[..., :4, :4] = 1.0
    generator.refiner_scale.fill_(3.0)
    anomaly_map, score = generator(features, reconstruction, refined, image_size=(16, 16))
    assert float(anomaly_map[0, 0, 0, 0]) == pytest.approx(1.5)  # 0.5 * 3 * 1
    assert float(score) == pytest.approx(1.5)  # the 4x4 pool over the square covers it exactly
    single = torch.zeros(1, 1, 16, 16)
    single[..., 8, 8] = 1.0
    _, pooled = generator(features, reconstruction, single, image_size=(16, 16))
    assert float(pooled) == pytest.approx(1.5 / 16)  # an isolated pixel is averaged away


def _normalised(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5) / 0.5


@pytest.mark.parametrize("cutpaste_probability", [1.0, 0.0])
def test_synthetic_masks_match_the_altered_pixels(cutpaste_probability: float, tmp_path: Path) -> None:
    torch.manual_seed(0)
    texture_dir = tmp_path / "dtd" / "images" / "stripes"
    texture_dir.mkdir(parents=True)
    stripes = (torch.arange(64)[:, None] % 8 < 4).float().expand(64, 64)
    Image.fromarray((stripes.numpy() * 255).astype("uint8")).convert("RGB").save(texture_dir / "a.png")
    generator = SyntheticAnomalyGenerator(texture_dir=tmp_path / "dtd", cutpaste_probability=cutpaste_probability)
    # smooth random images (a shifted copy of white noise would hardly differ from the original)
    images = _normalised(torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8), size=64, mode="bilinear"))
    augmented, masks = generator(images)
    changed = (augmented - images).abs().amax(dim=1, keepdim=True) > 1e-6
    assert masks.shape == (16, 1, 64, 64)
    assert bool((masks.flatten(1).sum(1) > 0).all()), "every copy carries an anomaly"
    assert not bool((changed & (masks == 0)).any()), "no pixel outside the mask is altered"
    inside = masks == 1
    assert float(changed[inside].float().mean()) > 0.95, "pixels inside the mask are altered"


def test_texture_folder_is_required_when_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SyntheticAnomalyGenerator(texture_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No texture images"):
        SyntheticAnomalyGenerator(texture_dir=tmp_path / "empty", cutpaste_probability=0.0)(torch.zeros(1, 3, 8, 8))
