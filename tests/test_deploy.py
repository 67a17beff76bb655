# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Line-side inputs: every bit depth read like the training data, bad inputs refused before the model loads."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalib_pnpt.data.dataset import ImageReadError
from anomalib_pnpt.deploy import image_files, main, read_image_file


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(0, 1, 32, dtype=np.float64), (32, 1))


def test_16_bit_grayscale_is_read_like_its_8_bit_copy(tmp_path) -> None:
    gray = _gradient()
    Image.fromarray((gray * 65535).round().astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray((gray * 255).round().astype(np.uint8)).save(tmp_path / "flat.png")
    deep, flat = read_image_file(tmp_path / "deep.png"), read_image_file(tmp_path / "flat.png")
    assert deep.shape == (32, 32, 3)
    assert np.abs(deep - flat).max() <= 1 / 255
    assert deep.mean() < 0.6  # not turned white


def test_folder_lists_images_and_refuses_a_truncated_one(tmp_path) -> None:
    for name in ("b.png", "a.png"):
        Image.fromarray((_gradient() * 255).astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.png"]
    (tmp_path / "c.png").write_bytes((tmp_path / "a.png").read_bytes()[:40])
    with pytest.raises(ImageReadError, match=r"c\.png"):
        image_files(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="No image files"):
        image_files(tmp_path / "empty")


@pytest.mark.parametrize("problem", ["missing", "not_an_image", "directory_without_images"])
def test_command_line_fails_in_one_line_before_loading_the_model(tmp_path, capsys, problem: str) -> None:
    model = tmp_path / "model.xml"
    model.write_text("not a model: loading it would fail differently")
    image = {
        "missing": tmp_path / "missing.png",
        "not_an_image": tmp_path / "text.png",
        "directory_without_images": tmp_path / "folder",
    }[problem]
    if problem == "not_an_image":
        image.write_text("hello")
    if problem == "directory_without_images":
        image.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(model), "--image", str(image)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in error
    assert image.name in error
