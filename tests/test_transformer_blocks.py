# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The shared post-LN blocks: what positions, masks and activations change, and earlier checkpoints' keys."""

from __future__ import annotations

import pytest
import torch

from anomalib_pnpt.transformer_blocks import ResidualAttention, ResidualFeedForward


def test_positions_go_to_queries_and_keys_and_masks_block_attention() -> None:
    torch.manual_seed(0)
    attention = ResidualAttention(dim=8, num_heads=2).eval()
    tokens, pos = torch.rand(1, 4, 8), torch.rand(4, 8)
    assert not torch.allclose(attention(tokens, tokens), attention(tokens, tokens, pos))
    # A token that may attend only to itself does not change when the others do.
    only_self = torch.full((4, 4), float("-inf")).fill_diagonal_(0.0)
    changed = tokens.clone()
    changed[:, 1:] += 1.0
    torch.testing.assert_close(
        attention(tokens, tokens, mask=only_self)[:, 0], attention(changed, changed, mask=only_self)[:, 0]
    )


def test_feed_forward_activation_is_an_argument() -> None:
    torch.manual_seed(0)
    gelu = ResidualFeedForward(dim=8, ffn_dim=16, activation="gelu")
    relu = ResidualFeedForward(dim=8, ffn_dim=16, activation="relu")
    relu.load_state_dict(gelu.state_dict())  # same weights, another activation
    tokens = torch.randn(2, 3, 8)
    assert not torch.allclose(gelu(tokens), relu(tokens))
    with pytest.raises(ValueError, match="activation"):
        ResidualFeedForward(dim=8, ffn_dim=16, activation="swish")
