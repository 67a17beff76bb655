# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The separable blur gives anomalib's 2-D Gaussian blur."""

from __future__ import annotations

import pytest
import torch
from anomalib.models.components import GaussianBlur2d

from anomalib_pnpt.gaussian_blur import SeparableGaussianBlur


@pytest.mark.parametrize(("sigma", "size"), [(4.0, 33), (1.0, 9), (2.5, 21)])
def test_matches_anomalib_gaussian_blur(sigma: float, size: int) -> None:
    """Same kernel, padding and normalisation as ``GaussianBlur2d``: outputs agree to float rounding."""
    maps = torch.rand(3, 1, 70, 90)
    expected = GaussianBlur2d(sigma=sigma, channels=1, kernel_size=size)(maps)
    got = SeparableGaussianBlur(sigma, kernel_size=size)(maps)
    assert got.shape == maps.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_default_kernel_size_covers_four_sigma() -> None:
    """The default length is 2 * round(4 sigma) + 1, PNPT's former setting."""
    assert SeparableGaussianBlur(4.0).vertical.shape[-2] == 33


def test_even_kernel_size_is_rejected() -> None:
    """An even kernel would shift the map by half a pixel."""
    with pytest.raises(ValueError, match="odd"):
        SeparableGaussianBlur(2.0, kernel_size=8)
