# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Shapes and defining properties of HPE, SACE, CSCD, the loss and the anomaly map."""

from __future__ import annotations

import pytest
import torch

from anomalib_pnpt.models.pnpt.anomaly_map import PnptAnomalyMap
from anomalib_pnpt.models.pnpt.components import CscdLayer, HierarchicalPatchEmbedding, SaceLayer
from anomalib_pnpt.models.pnpt.loss import DualCosineLoss, map_cosine_loss

MAPS = [torch.rand(2, 24, 32, 32), torch.rand(2, 48, 16, 16), torch.rand(2, 120, 8, 8)]


def test_hpe_growing_patches_give_one_grid_and_inverse_restores_shapes() -> None:
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=64)
    assert hpe.patch_sizes == [4, 2, 1]
    tokens = hpe(MAPS)
    assert tokens.shape == (2, 64, 64)  # 8 x 8 tokens from every scale
    assert [m.shape for m in hpe.inverse(tokens, (8, 8))] == [m.shape for m in MAPS]


def test_hpe_patch_vectors_are_an_exact_rearrangement() -> None:
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=8)
    vectors = hpe.patch_vectors(MAPS)
    assert vectors.shape == (2, 64, 24 * 16 + 48 * 4 + 120)
    # Token (0, 0) of the finest scale holds exactly its top-left 4 x 4 patch.
    assert torch.allclose(vectors[0, 0, : 24 * 16].sort().values, MAPS[0][0, :, :4, :4].flatten().sort().values)


def test_hpe_noise_only_in_training() -> None:
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=16, noise_scale=20.0)
    hpe.eval()
    assert torch.equal(hpe(MAPS), hpe(MAPS))
    hpe.train()
    assert not torch.equal(hpe(MAPS), hpe(MAPS))


def constant_embedding(noise_target: str, hidden_dim: int = 48) -> HierarchicalPatchEmbedding:
    """HPE whose projections ignore the maps: every token's ``E`` is the bias (norm 1 per element)."""
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim, noise_target=noise_target)
    with torch.no_grad():
        for projection in hpe.projections:
            projection.weight.zero_()
            projection.bias.fill_(1.0)
    return hpe


def test_hpe_noise_is_added_to_the_embeddings_with_the_papers_scale() -> None:
    torch.manual_seed(0)
    hpe = constant_embedding("embedding")
    clean = hpe.eval()(MAPS)
    noise = hpe.train()(MAPS) - clean
    # feature jitter on E: per-element std = noise_scale * ||e|| / C, with ||e|| = sqrt(C) here.
    expected = 20.0 * 48**0.5 / 48
    assert abs(noise.std().item() / expected - 1) < 0.05
    # Noise on the patch vectors never reaches E through all-zero projection weights.
    patch = constant_embedding("patch")
    assert torch.equal(patch.train()(MAPS), patch.eval()(MAPS))


def test_hpe_per_scale_projection_keeps_each_scale_in_its_own_slice() -> None:
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=64).eval()
    assert hpe.slice_dims == [22, 21, 21]
    changed = [MAPS[0], MAPS[1] + 1.0, MAPS[2]]  # only the middle scale differs
    difference = (hpe(changed) - hpe(MAPS)).abs().amax(dim=(0, 1))
    slices = torch.split(difference, hpe.slice_dims)
    assert slices[0].max() == 0 and slices[2].max() == 0 and slices[1].max() > 0
    # HPE^-1 is symmetric: a change in the middle slice reaches only the middle scale's maps.
    tokens = torch.rand(2, 64, 64)
    bumped = tokens.clone()
    bumped[..., 22:43] += 1.0
    pairs = zip(hpe.inverse(bumped, (8, 8)), hpe.inverse(tokens, (8, 8)), strict=True)
    moved = [(a - b).abs().max().item() for a, b in pairs]
    assert moved[0] == 0 and moved[2] == 0 and moved[1] > 0


def test_hpe_joint_projection_mixes_every_scale_into_every_channel() -> None:
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=64, scale_projection="joint").eval()
    changed = [MAPS[0], MAPS[1] + 1.0, MAPS[2]]
    assert bool(((hpe(changed) - hpe(MAPS)).abs().amax(dim=(0, 1)) > 0).all())


def test_hpe_loads_a_checkpoint_written_before_the_per_scale_option() -> None:
    hpe = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=16, scale_projection="joint").eval()
    old_layout = {
        key.replace("projections.0.", "projection.").replace("inverse_projections.0.", "inverse_projection."): value
        for key, value in hpe.state_dict().items()
    }
    assert "projection.weight" in old_layout
    restored = HierarchicalPatchEmbedding([24, 48, 120], [4, 8, 16], hidden_dim=16, scale_projection="joint").eval()
    restored.load_state_dict(old_layout)
    assert torch.equal(restored(MAPS), hpe(MAPS))


def test_hpe_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="scale_projection"):
        HierarchicalPatchEmbedding([8], [4], hidden_dim=8, scale_projection="mean")
    with pytest.raises(ValueError, match="noise_target"):
        HierarchicalPatchEmbedding([8], [4], hidden_dim=8, noise_target="input")


def test_hpe_rejects_patch_sizes_that_do_not_align() -> None:
    with pytest.raises(ValueError, match="one token grid"):
        HierarchicalPatchEmbedding([8, 8], [4, 8], hidden_dim=8, patch_sizes=[2, 2])


def test_sace_aligns_semantic_tokens_across_streams() -> None:
    torch.manual_seed(0)
    layer = SaceLayer(dim=32, num_heads=4, ffn_dim=64).eval()
    prior, own, semantic = torch.rand(2, 16, 32), torch.rand(2, 16, 32), torch.rand(2, 5, 32)
    r_prior, r_self, fused = layer(prior, own, semantic)
    assert r_prior.shape == r_self.shape == (2, 16, 32)
    assert fused.shape == (2, 5, 32)
    # The fused semantic tokens depend on the prior stream (second-order alignment), the self tokens do not.
    _, r_self_2, fused_2 = layer(torch.rand(2, 16, 32), own, semantic)
    assert torch.allclose(r_self, r_self_2)
    assert not torch.allclose(fused, fused_2)
    # Ablations: single stream, no semantic tokens.
    assert layer(None, own, semantic)[0] is None
    assert layer(prior, own, None)[2] is None


def test_sace_second_cross_attention_aligns_the_self_semantics_to_the_aligned_prior() -> None:
    """Eq. 4's second line: ``Z = LN(CAM(q=R_S(s), kv=R'_S(p)) + R_S(s))`` feeds ``E_S``, and only ``E_S``."""
    torch.manual_seed(0)
    layer = SaceLayer(dim=32, num_heads=4, ffn_dim=64).eval()
    prior, own, semantic = torch.rand(2, 16, 32), torch.rand(2, 16, 32), torch.rand(2, 5, 32)
    r_prior, r_self, fused = layer(prior, own, semantic)
    with torch.no_grad():
        layer.align_self.attention.out_proj.weight.mul_(-3.0)  # another second cross-attention
    r_prior_2, r_self_2, fused_2 = layer(prior, own, semantic)
    assert torch.equal(r_prior, r_prior_2) and torch.equal(r_self, r_self_2)
    assert not torch.allclose(fused, fused_2, atol=1e-3)


def test_sace_streams_in_one_batch_equal_separate_encoding() -> None:
    """Both streams share the encoder and run as one batch; each must still see only its own tokens."""
    torch.manual_seed(0)
    layer = SaceLayer(dim=32, num_heads=4, ffn_dim=64).eval()
    prior, own, semantic = torch.rand(3, 16, 32), torch.rand(3, 16, 32), torch.rand(3, 5, 32)
    r_prior, r_self, _ = layer(prior, own, semantic)
    torch.testing.assert_close(r_self, layer.encode(torch.cat([own, semantic], dim=1))[:, :16])
    torch.testing.assert_close(r_prior, layer.encode(torch.cat([prior, semantic], dim=1))[:, :16])


def test_cscd_output_depends_on_condition() -> None:
    torch.manual_seed(0)
    layer = CscdLayer(dim=32, num_heads=4, ffn_dim=64).eval()
    tokens = torch.rand(2, 16, 32)
    assert layer(tokens, torch.rand(2, 5, 32)).shape == (2, 16, 32)
    assert not torch.allclose(layer(tokens, torch.rand(2, 5, 32)), layer(tokens, torch.rand(2, 5, 32)))


def test_dual_cosine_loss_is_whole_map_cosine_summed_over_scales_and_streams() -> None:
    target = [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4)]
    assert float(map_cosine_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(map_cosine_loss(target, [t * 3.0 for t in target])) == pytest.approx(0.0, abs=1e-6)  # scale-free
    negated = [-t for t in target]
    assert float(map_cosine_loss(target, negated)) == pytest.approx(4.0, abs=1e-5)  # 2 scales x (1 - (-1))
    assert float(DualCosineLoss()(target, negated, negated)) == pytest.approx(8.0, abs=1e-5)
    assert float(DualCosineLoss()(target, None, negated)) == pytest.approx(4.0, abs=1e-5)


def test_anomaly_map_weighs_the_prior_stream_by_the_fusion_weight() -> None:
    """Eq. 8: the prior stream's reconstruction counts with ``w``, the self stream's with ``1 - w``."""
    target = [torch.rand(1, 8, 16, 16) + 0.1]
    prior, own = target[0].clone(), target[0].clone()
    prior[:, :, 2:6, 2:6] = -1.0  # only the prior stream fails in region A
    own[:, :, 10:14, 10:14] = -1.0  # only the self stream fails in region B
    region_a, region_b = (slice(8, 24), slice(8, 24)), (slice(40, 56), slice(40, 56))
    for weight, a_shows, b_shows in ((1.0, True, False), (0.0, False, True), (0.5, True, True)):
        anomaly_map, _ = PnptAnomalyMap(fusion_weight=weight, sigma=0.0)(target, [prior], [own], image_size=(64, 64))
        assert (float(anomaly_map[0, 0][region_a].mean()) > 0.1) == a_shows
        assert (float(anomaly_map[0, 0][region_b].mean()) > 0.1) == b_shows


def test_anomaly_map_localises_the_deviation() -> None:
    target = [torch.rand(1, 8, 16, 16) + 0.1]
    recon = [target[0].clone()]
    recon[0][:, :, 4:8, 4:8] = torch.rand(1, 8, 4, 4) - 0.5  # reconstruction fails in one region
    anomaly_map, score = PnptAnomalyMap(sigma=1.0)(target, recon, recon, image_size=(64, 64))
    assert anomaly_map.shape == (1, 1, 64, 64)
    assert anomaly_map[0, 0, 16:32, 16:32].mean() > 5 * anomaly_map[0, 0, 40:, 40:].mean()
    assert float(score) == pytest.approx(float(anomaly_map.max()))
    _, top = PnptAnomalyMap(sigma=1.0, top_k=10)(target, recon, recon, image_size=(64, 64))
    assert float(top) <= float(score)
