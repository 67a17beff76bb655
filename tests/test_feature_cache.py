# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""FeatureCache: computes each image once, never reuses a stale entry."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from anomalib_pnpt.feature_cache import FeatureCache


def _extractor(calls: list[int]):
    def extract(images: torch.Tensor) -> list[torch.Tensor]:
        calls.append(len(images))
        return [images * 2, images.mean(dim=1, keepdim=True)]

    return extract


def _files(tmp_path: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x" * (i + 1))
        paths.append(str(path))
    return paths


def test_hits_return_the_computed_features(tmp_path: Path) -> None:
    calls: list[int] = []
    cache = FeatureCache("net:1,2")
    paths = _files(tmp_path, 3)
    images = torch.rand(3, 3, 4, 4)
    first = cache.features(paths, images, _extractor(calls))
    # A batch mixing cached and new images only computes the new one.
    second = cache.features([paths[2], paths[0]], images[[2, 0]], _extractor(calls))
    assert calls == [3]
    assert torch.equal(second[0], first[0][[2, 0]])
    assert (cache.hits, cache.misses) == (2, 3)


def test_changed_file_size_or_input_shape_misses(tmp_path: Path) -> None:
    calls: list[int] = []
    cache = FeatureCache("net")
    paths = _files(tmp_path, 1)
    cache.features(paths, torch.rand(1, 3, 4, 4), _extractor(calls))
    cache.features(paths, torch.rand(1, 3, 8, 8), _extractor(calls))  # other input size
    Path(paths[0]).write_bytes(b"changed image")
    os.utime(paths[0], ns=(1, 1))
    cache.features(paths, torch.rand(1, 3, 4, 4), _extractor(calls))  # edited file
    assert calls == [1, 1, 1]


def test_other_backbone_does_not_share_entries(tmp_path: Path) -> None:
    paths = _files(tmp_path, 1)
    assert FeatureCache("a").key(paths[0], (3, 4, 4)) != FeatureCache("b").key(paths[0], (3, 4, 4))


def test_bounded_cache_still_returns_features(tmp_path: Path) -> None:
    calls: list[int] = []
    cache = FeatureCache("net", max_items=1)
    paths = _files(tmp_path, 2)
    images = torch.rand(2, 3, 4, 4)
    out = cache.features(paths, images, _extractor(calls))
    assert len(cache) == 1
    assert torch.equal(out[0], images * 2)


def test_memory_bound_stops_the_cache_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each image's maps take 4 * (48 + 16) = 256 bytes: a 600-byte bound keeps two of four images."""
    calls: list[int] = []
    cache = FeatureCache("net", max_mb=600 / 2**20)
    paths = _files(tmp_path, 4)
    images = torch.rand(4, 3, 4, 4)
    with caplog.at_level(logging.WARNING, logger="anomalib_pnpt.feature_cache"):
        out = cache.features(paths, images, _extractor(calls))
        again = cache.features(paths, images, _extractor(calls))
    assert len(cache) == 2 and cache.megabytes * 2**20 == 512
    assert torch.equal(out[0], images * 2) and torch.equal(again[0], images * 2)  # full: computed, still right
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "Feature cache full at 2 images" in caplog.records[0].message
