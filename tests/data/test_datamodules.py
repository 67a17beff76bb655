# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Multi-class datamodules: class tags, stable ordering, and clear answers for bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_pnpt.data import (
    DataLayoutError,
    ImageReadError,
    MultiClassFolder,
    MultiClassImageBatch,
    MultiClassMVTecAD,
    make_demo_dataset,
)
from anomalib_pnpt.data.dataset import read_rgb_image


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the demo data for tests that break it."""
    return Path(shutil.copytree(demo_root, tmp_path / "demo"))


def test_all_categories_found_sorted_and_tagged(demo_root: Path) -> None:
    datamodule = MultiClassMVTecAD(
        root=demo_root, categories=["weave", "disc", "tiles"], num_workers=0, eval_batch_size=64
    )
    datamodule.setup()
    assert datamodule.categories == ["disc", "tiles", "weave"]
    assert MultiClassMVTecAD(root=demo_root).categories == ["disc", "tiles", "weave"]
    batch = next(iter(datamodule.test_dataloader()))
    assert isinstance(batch, MultiClassImageBatch)
    for path, name, index in zip(batch.image_path, batch.category, batch.category_id.tolist(), strict=True):
        assert Path(path).parts[-4] == name  # <root>/<category>/test/<defect>/<file>
        assert datamodule.categories[index] == name
    # The default validation split holds out 10 % (at least one) of EACH class's normal training images.
    assert len(datamodule.train_data) == 3 * 7
    assert set(datamodule.train_data.samples.category) == {"disc", "tiles", "weave"}
    assert datamodule.val_data.samples.category.value_counts().to_dict() == {"disc": 1, "tiles": 1, "weave": 1}
    assert set(datamodule.val_data.samples.label_index) == {0}
    assert not set(datamodule.val_data.samples.image_path) & set(datamodule.train_data.samples.image_path)
    assert not set(datamodule.val_data.samples.image_path) & set(datamodule.test_data.samples.image_path)


def test_subset_of_categories_and_ids_follow_sorted_list(demo_root: Path) -> None:
    datamodule = MultiClassMVTecAD(root=demo_root, categories=["weave", "disc"], num_workers=0)
    datamodule.setup()
    ids = dict(zip(datamodule.train_data.samples.category, datamodule.train_data.samples.category_id, strict=True))
    assert ids == {"disc": 0, "weave": 1}


def test_demo_dataset_is_deterministic(tmp_path: Path) -> None:
    first = make_demo_dataset(tmp_path / "a", image_size=32, n_train=2, n_test_normal=1, n_test_defect=2)
    second = make_demo_dataset(tmp_path / "b", image_size=32, n_train=2, n_test_normal=1, n_test_defect=2)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.png"))
    for relative in files:
        assert np.array_equal(np.asarray(Image.open(first / relative)), np.asarray(Image.open(second / relative)))


def test_demo_masks_mark_changed_pixels(demo_root: Path) -> None:
    masks = list(demo_root.glob("*/ground_truth/*/*_mask.png"))
    assert masks
    assert all(np.asarray(Image.open(m)).max() == 255 for m in masks)


def test_unknown_category_lists_found(demo_root: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"Unknown category \['bolt'\].*Found: \['disc', 'tiles', 'weave'\]"):
        MultiClassMVTecAD(root=demo_root, categories=["disc", "bolt"])


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="does not exist"):
        MultiClassMVTecAD(root=tmp_path / "nowhere")


def test_empty_class_folder(demo_copy: Path) -> None:
    for image in (demo_copy / "tiles" / "train" / "good").iterdir():
        image.unlink()
    datamodule = MultiClassMVTecAD(root=demo_copy, num_workers=0)
    with pytest.raises(DataLayoutError, match="'tiles' has no training images"):
        datamodule.setup()


def test_truncated_image_is_named(demo_copy: Path) -> None:
    path = demo_copy / "disc" / "train" / "good" / "001.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"001\.png"):
        read_rgb_image(path)
    # The datamodule names it at set-up, before anything is trained.
    datamodule = MultiClassMVTecAD(root=demo_copy, categories=["disc"], num_workers=0, train_batch_size=64)
    with pytest.raises(DataLayoutError, match=r"unreadable image: .*disc/train/good/001\.png"):
        datamodule.setup()


def test_corrupt_test_image_and_wrong_size_mask_found_at_setup(demo_copy: Path) -> None:
    defect = next(p for p in sorted((demo_copy / "weave" / "test").rglob("*.png")) if p.parent.name != "good")
    mask = demo_copy / "weave" / "ground_truth" / defect.parent.name / f"{defect.stem}_mask.png"
    Image.open(mask).resize((17, 9)).save(mask)
    broken = next((demo_copy / "weave" / "test" / "good").iterdir())
    broken.write_bytes(b"not an image")
    with pytest.raises(DataLayoutError, match="2 bad image") as error:
        MultiClassMVTecAD(root=demo_copy, categories=["weave"], num_workers=0).setup()
    assert "mask size (17, 9) differs" in str(error.value) and mask.name in str(error.value)
    assert f"unreadable image: {broken}" in str(error.value)


def test_empty_category_list_is_a_clear_error(demo_root: Path) -> None:
    with pytest.raises(DataLayoutError, match="categories is empty"):
        MultiClassMVTecAD(root=demo_root, categories=[])


def test_defect_image_without_mask(demo_copy: Path) -> None:
    mask = next((demo_copy / "weave" / "ground_truth").rglob("*_mask.png"))
    mask.unlink()
    with pytest.raises(DataLayoutError, match=f"defect image without mask: .*{mask.name.replace('_mask', '')}"):
        MultiClassMVTecAD(root=demo_copy, num_workers=0).setup()


def test_mask_without_defect_image(demo_copy: Path) -> None:
    image = next(p for p in (demo_copy / "disc" / "test").rglob("*.png") if p.parent.name != "good")
    image.unlink()
    with pytest.raises(DataLayoutError, match=f"mask without defect image: .*{image.stem}_mask.png"):
        MultiClassMVTecAD(root=demo_copy, num_workers=0).setup()


def test_grayscale_rgba_and_16bit_are_converted(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgba = np.dstack([np.full((16, 16, 3), 100, np.uint8), np.zeros((16, 16), np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)  # same picture, 16 bits
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")

    gray_t, rgba_t, deep_t = (read_rgb_image(tmp_path / f) for f in ("gray.png", "rgba.png", "deep.png"))
    for tensor in (gray_t, rgba_t, deep_t):
        assert tensor.shape == (3, 16, 16)
        assert tensor.dtype == torch.float32
    assert torch.allclose(rgba_t, torch.full_like(rgba_t, 100 / 255))  # alpha dropped, colour kept
    # 16-bit must keep its gradient (PIL's convert("RGB") would clip it to white).
    assert torch.allclose(deep_t, gray_t, atol=1 / 255)
    assert deep_t.min() < 0.1


def test_grayscale_dataset_gives_rgb_batches(industrial_root: Path) -> None:
    datamodule = MultiClassMVTecAD(
        root=industrial_root, categories=["magnetic_tile"], num_workers=0, train_batch_size=4
    )
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.image.shape[1] == 3


def test_industrial_counts(industrial_root: Path) -> None:
    datamodule = MultiClassMVTecAD(root=industrial_root, num_workers=0, val_split_mode="same_as_test")
    datamodule.setup()
    assert datamodule.categories == ["bottle", "hazelnut_toy", "magnetic_tile"]
    train = datamodule.train_data.samples.category.value_counts().to_dict()
    test = datamodule.test_data.samples.category.value_counts().to_dict()
    assert train == {"bottle": 209, "hazelnut_toy": 28, "magnetic_tile": 761}
    assert test == {"bottle": 83, "hazelnut_toy": 23, "magnetic_tile": 583}
    defects = datamodule.test_data.samples.query("label_index == 1")
    assert defects.mask_path.map(lambda p: Path(p).is_file()).all()


def test_folder_datamodule(demo_root: Path, tmp_path: Path) -> None:
    for category in ("disc", "weave"):
        base = tmp_path / category
        shutil.copytree(demo_root / category / "train" / "good", base / "good")
        defect_dirs = [p for p in (demo_root / category / "test").iterdir() if p.name != "good"]
        for defect_dir in defect_dirs:
            shutil.copytree(defect_dir, base / "bad", dirs_exist_ok=True)
            shutil.copytree(demo_root / category / "ground_truth" / defect_dir.name, base / "masks", dirs_exist_ok=True)
    datamodule = MultiClassFolder(
        root=tmp_path, normal_dir="good", abnormal_dir="bad", mask_dir="masks", num_workers=0, eval_batch_size=64
    )
    datamodule.setup()
    assert datamodule.categories == ["disc", "weave"]
    batch = next(iter(datamodule.test_dataloader()))
    assert set(batch.category) == {"disc"} or set(batch.category) == {"disc", "weave"}
    assert batch.gt_mask.shape[-2:] == batch.image.shape[-2:]
    assert set(datamodule.test_data.samples.category) == {"disc", "weave"}
