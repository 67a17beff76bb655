# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The demo's logical-anomaly class ``kit``: a tray whose defects are made only of normal parts.

A tray with six slots (2 x 3), each holding its own part: a red disc, a blue square, a green triangle, a yellow
ring, a row of three purple pegs and an orange bar. Every part sits loosely in its slot (shifted and turned a
little), and the whole tray is seen as a line camera sees it: shifted, turned by a few degrees, lit a little
brighter or darker and unevenly. A defect is made of the same parts, wrongly arranged, as in MVTec LOCO's
logical anomalies -- locally every patch looks like a patch of a normal tray:

* ``missing``: a slot left empty;
* ``duplicate``: a slot holds a second copy of another slot's part instead of its own;
* ``swapped``: two slots exchanged their parts;
* ``wrong_colour``: a part in the colour of another part;
* ``wrong_count``: two or four pegs instead of three.

The mask marks where the arrangement is wrong: the footprint of the part that should be there and of the part
that is there. Images are drawn at twice their size and averaged down (smooth edges at any angle).

Example:
    >>> import numpy as np
    >>> image = kit_image(64, np.random.default_rng(0))
    >>> image.shape
    (64, 64, 3)
    >>> image, mask, name = kit_defect(64, np.random.default_rng(0), 0)
    >>> name, bool(mask.any())
    ('missing', True)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

KIT_DEFECTS = ("missing", "duplicate", "swapped", "wrong_colour", "wrong_count")

# Slot centres in tray coordinates (the tray spans [0.14, 0.86] in both axes), 2 rows x 3 columns.
_SLOT_CENTRES = [(0.33, 0.26), (0.33, 0.5), (0.33, 0.74), (0.67, 0.26), (0.67, 0.5), (0.67, 0.74)]
_SLOT_HALF = 0.105  # half the side of a slot
_PEG_SLOT = 4
_PEGS = 3


@dataclass(frozen=True)
class Part:
    """One part: its shape, colour and size (the half extent in tray units)."""

    shape: str
    colour: tuple[float, float, float]
    size: float


PARTS = (
    Part("disc", (0.85, 0.2, 0.15), 0.045),
    Part("square", (0.15, 0.3, 0.85), 0.04),
    Part("triangle", (0.2, 0.7, 0.25), 0.05),
    Part("ring", (0.9, 0.8, 0.15), 0.045),
    Part("pegs", (0.6, 0.25, 0.7), 0.016),
    Part("bar", (0.95, 0.55, 0.1), 0.055),
)


def _footprint(part: Part, u: np.ndarray, v: np.ndarray, centre: np.ndarray, angle: float, count: int) -> np.ndarray:
    """Where ``part`` covers the tray coordinates ``(u, v)``, placed at ``centre`` and turned by ``angle``."""
    du, dv = u - centre[0], v - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    a, b = c * du + s * dv, -s * du + c * dv  # part coordinates
    r = part.size
    if part.shape == "disc":
        return np.hypot(a, b) < r
    if part.shape == "square":
        return (np.abs(a) < r) & (np.abs(b) < r)
    if part.shape == "triangle":
        return (a < r * 0.6) & (a > -r) & (np.abs(b) < (r * 0.6 - a) * 0.62)
    if part.shape == "ring":
        distance = np.hypot(a, b)
        return (distance < r) & (distance > r * 0.55)
    if part.shape == "bar":
        return (np.abs(a) < r * 0.35) & (np.abs(b) < r)
    # pegs: ``count`` small discs in a row, centred on the slot
    offsets = (np.arange(count) - (count - 1) / 2) * r * 2.6
    return np.any([np.hypot(a, b - offset) < r for offset in offsets], axis=0)


@dataclass(frozen=True)
class _Placement:
    part: Part
    centre: np.ndarray
    angle: float
    count: int = _PEGS


def _normal_layout(rng: np.random.Generator) -> list[_Placement]:
    """Every slot's own part, loose in its slot."""
    return [
        _Placement(part, np.array(_SLOT_CENTRES[i]) + rng.uniform(-0.025, 0.025, 2), rng.uniform(-0.3, 0.3))
        for i, part in enumerate(PARTS)
    ]


def _render(size: int, rng: np.random.Generator, layout: list[_Placement], marked: list[_Placement]) -> tuple:
    """The tray image at ``size`` and the mask of the ``marked`` placements' footprints."""
    scale = 2 * size
    coords = (np.arange(scale) + 0.5) / scale
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    # The line camera: the tray shifted and turned a little; tray coordinates of every pixel.
    shift, angle = rng.uniform(-0.03, 0.03, 2), np.deg2rad(rng.uniform(-4, 4))
    c, s = np.cos(angle), np.sin(angle)
    y0, x0 = yy - 0.5 - shift[0], xx - 0.5 - shift[1]
    u, v = 0.5 + c * y0 + s * x0, 0.5 - s * y0 + c * x0
    image = np.empty((scale, scale, 3))
    image[:] = (0.32, 0.34, 0.36)  # the belt
    tray = (np.abs(u - 0.5) < 0.36) & (np.abs(v - 0.5) < 0.36)
    image[tray] = (0.62, 0.64, 0.66)
    for centre in _SLOT_CENTRES:
        slot = (np.abs(u - centre[0]) < _SLOT_HALF) & (np.abs(v - centre[1]) < _SLOT_HALF)
        image[slot] = (0.5, 0.52, 0.55)
    for placement in layout:
        image[_footprint(placement.part, u, v, placement.centre, placement.angle, placement.count)] = (
            placement.part.colour
        )
    mask = np.zeros((scale, scale), dtype=bool)
    for placement in marked:
        mask |= _footprint(placement.part, u, v, placement.centre, placement.angle, placement.count)
    # Lighting: brighter or darker, and uneven across the belt.
    gradient = rng.uniform(-0.06, 0.06, 2)
    image *= rng.uniform(0.9, 1.1) * (1 + gradient[0] * (yy - 0.5) + gradient[1] * (xx - 0.5))[..., None]
    image = image.reshape(size, 2, size, 2, 3).mean((1, 3))
    mask = mask.reshape(size, 2, size, 2).mean((1, 3)) >= 0.5
    return image, mask


def kit_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """A normal tray, ``(size, size, 3)`` in ``[0, 1]`` before sensor noise.

    Args:
        size: Image side.
        rng: Random generator.

    Returns:
        The image.
    """
    return _render(size, rng, _normal_layout(rng), [])[0]


def kit_defect(size: int, rng: np.random.Generator, kind: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A tray with a logical defect ``KIT_DEFECTS[kind % 5]``: ``(image, mask, defect name)``.

    Args:
        size: Image side.
        rng: Random generator.
        kind: Index into :data:`KIT_DEFECTS` (taken modulo its length).

    Returns:
        The image, its boolean mask and the defect's name.
    """
    name = KIT_DEFECTS[kind % len(KIT_DEFECTS)]
    layout = _normal_layout(rng)
    i, j = (int(k) for k in rng.choice(len(PARTS), 2, replace=False))
    if name == "missing":
        marked = [layout[i]]
        layout = layout[:i] + layout[i + 1 :]
    elif name == "duplicate":
        copy = replace(layout[i], part=PARTS[j])
        marked, layout[i] = [layout[i], copy], copy
    elif name == "swapped":
        a, b = replace(layout[i], part=PARTS[j]), replace(layout[j], part=PARTS[i])
        marked = [layout[i], layout[j], a, b]
        layout[i], layout[j] = a, b
    elif name == "wrong_colour":
        if PARTS[i].shape == "pegs":  # a part that is not the pegs, in the colour of another part
            i, j = j, i
        layout[i] = replace(layout[i], part=replace(PARTS[i], colour=PARTS[j].colour))
        marked = [layout[i]]
    else:
        pegs = replace(layout[_PEG_SLOT], count=int(rng.choice([2, 4])))
        marked, layout[_PEG_SLOT] = [layout[_PEG_SLOT], pegs], pegs
    image, mask = _render(size, rng, layout, marked)
    return image, mask, name
