# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The synthetic-copy bank: copies reused for ``refresh_epochs`` epochs, never stale, memory bounded."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from anomalib_pnpt import OneNip
from anomalib_pnpt.models.onenip.synthetic_bank import SyntheticCopyBank


class _Maker:
    """Makes distinct 'copies' (random features) and counts the images it was asked for."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.images += len(images)
        return torch.rand(len(images), 5, 2, 2), torch.rand(len(images), 1, 4, 4) > 0.5


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    paths = [tmp_path / f"{name}.png" for name in "abc"]
    for path in paths:
        path.write_bytes(b"image")
    return [str(path) for path in paths]


def test_copies_are_reused_until_they_are_refresh_epochs_old(files: list[str]) -> None:
    bank, make, images = SyntheticCopyBank("lite0", refresh_epochs=3), _Maker(), torch.rand(3, 3, 4, 4)
    first = bank.copies(files, images, epoch=0, make=make)
    again = bank.copies(files, images, epoch=2, make=make)
    assert make.images == 3 and torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    renewed = bank.copies(files, images, epoch=3, make=make)
    assert make.images == 6 and not torch.equal(first[0], renewed[0])
    # a batch of fresh and stale entries: only the stale image is made again, rows stay in batch order
    partial = bank.copies([files[0], files[1]], images[:2], epoch=3, make=make)
    assert make.images == 6 and torch.equal(partial[0], renewed[0][:2])


def test_refresh_every_epoch_is_the_papers_new_copy_at_every_step(files: list[str]) -> None:
    bank, make, images = SyntheticCopyBank("lite0", refresh_epochs=1), _Maker(), torch.rand(3, 3, 4, 4)
    bank.copies(files, images, epoch=0, make=make)
    bank.copies(files, images, epoch=0, make=make)
    assert make.images == 6 and len(bank) == 0


def test_an_edited_image_or_another_input_size_never_reuses_a_copy(files: list[str]) -> None:
    bank, make = SyntheticCopyBank("lite0", refresh_epochs=10), _Maker()
    bank.copies(files, torch.rand(3, 3, 4, 4), epoch=0, make=make)
    stat = Path(files[0]).stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    bank.copies(files, torch.rand(3, 3, 4, 4), epoch=0, make=make)
    assert make.images == 4  # only the edited file
    bank.copies(files, torch.rand(3, 3, 8, 8), epoch=0, make=make)
    assert make.images == 7  # another input size: all three


def test_beyond_the_memory_bound_copies_are_made_at_every_step(files: list[str]) -> None:
    bank, make, images = SyntheticCopyBank("lite0", refresh_epochs=5, max_items=2), _Maker(), torch.rand(3, 3, 4, 4)
    bank.copies(files, images, epoch=0, make=make)
    features, masks = bank.copies(files, images, epoch=0, make=make)
    assert len(bank) == 2 and make.images == 4 and features.shape == (3, 5, 2, 2) and masks.shape == (3, 1, 4, 4)


def test_refresh_epochs_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="refresh_epochs"):
        SyntheticCopyBank("lite0", refresh_epochs=0)


@pytest.mark.parametrize(("preset", "expected_syntheses"), [("paper", 2), ("cpu", 1)])
def test_onenip_training_steps_take_their_synthetic_copies_from_the_bank(
    preset: str, expected_syntheses: int, files: list[str]
) -> None:
    """Two training steps in the same epoch: the paper's setting synthesises twice, the cpu preset's (a copy kept
    for 3 epochs) once."""
    model = OneNip(
        preset=preset,
        backbone="tf_efficientnet_lite0",
        pre_trained=False,
        image_size=64,
        hidden_dim=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
    )
    images = model.pre_processor.transform(torch.rand(3, 3, 64, 64))
    class_ids = torch.tensor([0, 1, 0])
    model.build_prompt_pool([(images, class_ids, files)], num_classes=2)
    syntheses = []
    generator = model.anomaly_generator

    def counting_generator(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        syntheses.append(len(batch))
        return generator(batch)

    model.anomaly_generator = counting_generator
    model.train()
    batch = SimpleNamespace(image=images, image_path=files, category_id=class_ids)
    for _ in range(2):
        loss = model.training_step(batch)["loss"]
        assert torch.isfinite(loss)
    assert len(syntheses) == expected_syntheses
