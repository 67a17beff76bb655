# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Embedded demo data: a small multi-class inspection dataset generated deterministically, no download.

Three classes that look clearly different (so class retrieval is meaningful) and whose defects are local
(so pixel metrics are meaningful), written in the MVTec AD layout with binary masks:

* ``disc``: a shaded disc on a plain background (an object class); defects: a dark scratch, a missing bite.
* ``weave``: a woven stripe texture (a texture class); defects: a bright blob, a patch of rotated stripes.
* ``tiles``: a grid of tiles with grout lines; defects: a discoloured tile, a crack.
* ``kit`` (not in the default set): a tray of six parts whose defects are made only of normal parts -- a part
  missing, duplicated or swapped, a matched pair in two colours, the wrong count (:mod:`anomalib_pnpt.data.kit`).
  Its benchmark size, 200 training and 100 test images at 256 px, is one command:
  ``anomalib-pnpt demo-data --output datasets/logical --categories kit --n-train 200 --n-test-normal 50
  --n-test-defect 50 --image-size 256``.

Every normal image differs from the others by position, lighting and noise drawn from a seeded generator,
so the same call always writes the same files.

Example:
    >>> import tempfile
    >>> root = make_demo_dataset(tempfile.mkdtemp(), image_size=64, n_train=4, n_test_normal=2, n_test_defect=2)
    >>> sorted(p.name for p in root.iterdir() if p.is_dir())
    ['disc', 'tiles', 'weave']
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from anomalib_pnpt.data.kit import kit_defect, kit_image

DEMO_CATEGORIES = ("disc", "tiles", "weave")
LOGICAL_CATEGORIES = ("kit",)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float64) / size
    return np.meshgrid(coords, coords, indexing="ij")


def _disc(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    cy, cx = 0.5 + rng.uniform(-0.03, 0.03, 2)
    radius = np.hypot(yy - cy, xx - cx)
    inside = radius < 0.32
    shade = 0.55 + 0.35 * (1 - radius / 0.32) + rng.uniform(-0.03, 0.03)
    image = np.stack([np.full_like(yy, 0.15), np.full_like(yy, 0.18), np.full_like(yy, 0.22)], -1)
    colour = np.array([0.85, 0.55, 0.2])
    image[inside] = (shade[inside, None] * colour).clip(0, 1)
    return image


def _weave(size: int, rng: np.random.Generator, angle: float | None = None) -> np.ndarray:
    yy, xx = _grid(size)
    phase = rng.uniform(0, 2 * np.pi)
    theta = np.deg2rad(30.0 if angle is None else angle)
    u = np.cos(theta) * xx + np.sin(theta) * yy
    v = -np.sin(theta) * xx + np.cos(theta) * yy
    pattern = 0.5 + 0.25 * np.sin(2 * np.pi * 12 * u + phase) * np.sign(np.sin(2 * np.pi * 6 * v) + 1e-9)
    return np.stack([pattern * 0.4 + 0.2, pattern * 0.6 + 0.2, pattern * 0.5 + 0.35], -1)


def _tiles(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    offset = rng.uniform(0, 0.05, 2)
    gy, gx = ((yy + offset[0]) * 4) % 1, ((xx + offset[1]) * 4) % 1
    grout = (gy < 0.08) | (gx < 0.08)
    image = np.stack([np.full_like(yy, 0.75), np.full_like(yy, 0.78), np.full_like(yy, 0.8)], -1)
    image += rng.uniform(-0.04, 0.04)
    image[grout] = [0.3, 0.3, 0.32]
    return image


def _stroke_mask(size: int, rng: np.random.Generator, width: float) -> np.ndarray:
    """A straight stroke between two random points inside the central area."""
    yy, xx = _grid(size)
    p0, p1 = rng.uniform(0.3, 0.7, 2), rng.uniform(0.3, 0.7, 2)
    direction = p1 - p0
    t = np.clip(((yy - p0[0]) * direction[0] + (xx - p0[1]) * direction[1]) / (direction @ direction + 1e-9), 0, 1)
    distance = np.hypot(yy - (p0[0] + t * direction[0]), xx - (p0[1] + t * direction[1]))
    return distance < width


def _blob_mask(size: int, rng: np.random.Generator, radius: float) -> np.ndarray:
    yy, xx = _grid(size)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    return np.hypot(yy - cy, xx - cx) < radius * rng.uniform(0.8, 1.2)


def _defect(  # noqa: PLR0911  (one return per class and defect)
    category: str, kind: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (image, mask, defect name) for one defect image of ``category`` (``kind``: which of its defects)."""
    if category == "kit":
        return kit_defect(size, rng, kind)
    base = GENERATORS[category](size, rng)
    kind %= 2
    if category == "disc":
        if kind == 0:
            mask = _stroke_mask(size, rng, 0.015)
            base[mask] = [0.1, 0.07, 0.05]
            return base, mask, "scratch"
        mask = _blob_mask(size, rng, 0.08)
        base[mask] = [0.15, 0.18, 0.22]
        return base, mask, "bite"
    if category == "weave":
        if kind == 0:
            mask = _blob_mask(size, rng, 0.07)
            base[mask] = [0.95, 0.9, 0.6]
            return base, mask, "spot"
        mask = _blob_mask(size, rng, 0.12)
        base[mask] = _weave(size, rng, angle=120.0)[mask]
        return base, mask, "misweave"
    if kind == 0:
        yy, xx = _grid(size)
        cell = rng.integers(1, 3, 2) / 4
        mask = (yy >= cell[0] + 0.06) & (yy < cell[0] + 0.22) & (xx >= cell[1] + 0.06) & (xx < cell[1] + 0.22)
        base[mask] = base[mask] * np.array([1.0, 0.6, 0.5])
        return base, mask, "stain"
    mask = _stroke_mask(size, rng, 0.012)
    base[mask] = [0.2, 0.2, 0.2]
    return base, mask, "crack"


GENERATORS: dict[str, Callable[..., np.ndarray]] = {"disc": _disc, "tiles": _tiles, "weave": _weave, "kit": kit_image}


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)


def make_demo_dataset(
    root: str | Path,
    image_size: int = 128,
    n_train: int = 24,
    n_test_normal: int = 6,
    n_test_defect: int = 8,
    seed: int = 0,
    categories: tuple[str, ...] = DEMO_CATEGORIES,
) -> Path:
    """Write the demo dataset in the MVTec AD layout (skipped when the same configuration is already there).

    Args:
        root: Output folder; ``<root>/<category>/{train,test,ground_truth}`` are created.
        image_size: Side of the square images.
        n_train: Normal training images per class.
        n_test_normal: Normal test images per class.
        n_test_defect: Defect test images per class (split evenly over the class's defect types).
        seed: Seed of the generator; one seed always gives the same files.
        categories: Classes to write, of :data:`DEMO_CATEGORIES` and :data:`LOGICAL_CATEGORIES`.

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root)
    config = {
        "image_size": image_size,
        "n_train": n_train,
        "n_test_normal": n_test_normal,
        "n_test_defect": n_test_defect,
        "seed": seed,
        "categories": list(categories),
    }
    stamp = root / "demo_config.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == config:
        return root
    for index, category in enumerate(categories):
        rng = np.random.default_rng([seed, index])

        def noise(image: np.ndarray, rng: np.random.Generator = rng) -> np.ndarray:
            return image + rng.normal(0, 0.015, image.shape)  # sensor noise

        for i in range(n_train):
            _save(noise(GENERATORS[category](image_size, rng)), root / category / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_normal):
            _save(noise(GENERATORS[category](image_size, rng)), root / category / "test" / "good" / f"{i:03d}.png")
        for i in range(n_test_defect):
            image, mask, defect = _defect(category, i, image_size, rng)
            _save(noise(image), root / category / "test" / defect / f"{i:03d}.png")
            _save(mask.astype(np.float64), root / category / "ground_truth" / defect / f"{i:03d}_mask.png")
    stamp.write_text(json.dumps(config))
    return root


def main(argv: list[str] | None = None) -> Path:
    """``anomalib-pnpt demo-data``: write demo classes in the MVTec AD layout (what ``MultiClassMVTecAD`` reads).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The dataset root.
    """
    parser = argparse.ArgumentParser(prog="anomalib-pnpt demo-data", description=make_demo_dataset.__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--categories", nargs="+", default=list(DEMO_CATEGORIES), choices=sorted(GENERATORS))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-test-normal", type=int, default=6)
    parser.add_argument("--n-test-defect", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_demo_dataset(
        args.output,
        image_size=args.image_size,
        n_train=args.n_train,
        n_test_normal=args.n_test_normal,
        n_test_defect=args.n_test_defect,
        seed=args.seed,
        categories=tuple(args.categories),
    )
    print(f"Demo data ({', '.join(args.categories)}) in {root}")
    return root
