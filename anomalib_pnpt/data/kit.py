# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The demo's logical-anomaly class ``kit``: a tray whose defects are made only of normal parts.

A tray with six slots (2 x 3), each holding its own part: a disc, a blue square, a green triangle, a ring, three
purple pegs and an orange bar. The disc and the ring are a matched pair: one colour, drawn for each tray from a
palette of five (like cables that must match at both ends). Every part sits loosely in its slot (off its centre,
turned), the pegs lie anywhere in theirs, and the whole tray is seen as a line camera sees it: shifted, turned by
a few degrees, lit a little brighter or darker and unevenly. A defect is made of the same parts, wrongly
arranged, as in MVTec LOCO's logical anomalies -- locally every patch looks like a patch of a normal tray:

* ``missing``: a slot left empty;
* ``duplicate``: a slot holds a second copy of another slot's part instead of its own;
* ``swapped``: two slots exchanged their parts;
* ``wrong_colour``: the pair's two parts in two colours of the palette;
* ``wrong_count``: two or four pegs instead of three.

The mask marks where the arrangement is wrong: the footprint of the part that should be there and of the part
that is there (one peg for a wrong count, the recoloured part for a wrong colour). Images are drawn at twice
their size and averaged down (smooth edges at any angle).

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
_LOOSE = 0.04  # how far a part sits off its slot's centre, at most
_PAIR = (0, 3)  # the disc and the ring: one colour per tray, from PALETTE
_PEG_SLOT = 4
_PEGS = 3
PALETTE = ((0.85, 0.2, 0.15), (0.15, 0.3, 0.85), (0.2, 0.7, 0.25), (0.9, 0.8, 0.15), (0.95, 0.55, 0.1))


@dataclass(frozen=True)
class Part:
    """One part: its shape, colour and size (the half extent in tray units)."""

    shape: str
    colour: tuple[float, float, float]
    size: float


PARTS = (
    Part("disc", PALETTE[0], 0.045),
    Part("square", (0.15, 0.3, 0.85), 0.04),
    Part("triangle", (0.2, 0.7, 0.25), 0.05),
    Part("ring", PALETTE[0], 0.045),
    Part("peg", (0.6, 0.25, 0.7), 0.016),
    Part("bar", (0.95, 0.55, 0.1), 0.055),
)


@dataclass(frozen=True)
class _Placement:
    """A part where it lies: its centre and angle in tray units (each peg of the pegs is a placement)."""

    part: Part
    centre: np.ndarray
    angle: float


def _footprint(placement: _Placement, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the placed part covers the tray coordinates ``(u, v)``."""
    du, dv = u - placement.centre[0], v - placement.centre[1]
    c, s = np.cos(placement.angle), np.sin(placement.angle)
    a, b = c * du + s * dv, -s * du + c * dv  # part coordinates
    r, shape = placement.part.size, placement.part.shape
    if shape in {"disc", "peg"}:
        return np.hypot(a, b) < r
    if shape == "square":
        return (np.abs(a) < r) & (np.abs(b) < r)
    if shape == "triangle":
        return (a < r * 0.6) & (a > -r) & (np.abs(b) < (r * 0.6 - a) * 0.62)
    if shape == "ring":
        distance = np.hypot(a, b)
        return (distance < r) & (distance > r * 0.55)
    return (np.abs(a) < r * 0.35) & (np.abs(b) < r)  # bar


def _in_slot(part: Part, slot: int, rng: np.random.Generator) -> _Placement:
    """``part`` loose in ``slot``: off its centre and turned."""
    return _Placement(part, np.array(_SLOT_CENTRES[slot]) + rng.uniform(-_LOOSE, _LOOSE, 2), rng.uniform(-0.4, 0.4))


def _pegs(count: int, rng: np.random.Generator) -> list[_Placement]:
    """``count`` pegs anywhere in their slot, apart from each other."""
    peg, centres = PARTS[_PEG_SLOT], []
    reach = _SLOT_HALF - 1.5 * peg.size
    while len(centres) < count:
        candidate = np.array(_SLOT_CENTRES[_PEG_SLOT]) + rng.uniform(-reach, reach, 2)
        if all(np.hypot(*(candidate - other)) > 3 * peg.size for other in centres):
            centres.append(candidate)
    return [_Placement(peg, centre, 0.0) for centre in centres]


def _normal_layout(rng: np.random.Generator) -> list[list[_Placement]]:
    """Per slot, what lies in it: its own part (the pair in one colour drawn for this tray), or the pegs."""
    colour = PALETTE[rng.integers(len(PALETTE))]
    layout = []
    for slot, part in enumerate(PARTS):
        if slot == _PEG_SLOT:
            layout.append(_pegs(_PEGS, rng))
            continue
        layout.append([_in_slot(replace(part, colour=colour) if slot in _PAIR else part, slot, rng)])
    return layout


def _render(
    size: int, rng: np.random.Generator, placements: list[_Placement], marked: list[_Placement]
) -> tuple[np.ndarray, np.ndarray]:
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
    image[(np.abs(u - 0.5) < 0.36) & (np.abs(v - 0.5) < 0.36)] = (0.62, 0.64, 0.66)  # the tray
    for centre in _SLOT_CENTRES:
        image[(np.abs(u - centre[0]) < _SLOT_HALF) & (np.abs(v - centre[1]) < _SLOT_HALF)] = (0.5, 0.52, 0.55)
    for placement in placements:
        image[_footprint(placement, u, v)] = placement.part.colour
    mask = np.zeros((scale, scale), dtype=bool)
    for placement in marked:
        mask |= _footprint(placement, u, v)
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
    return _render(size, rng, [p for slot in _normal_layout(rng) for p in slot], [])[0]


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
    i_part, j_part = layout[i][0].part, layout[j][0].part
    if name == "missing":
        marked, layout[i] = layout[i], []
    elif name == "duplicate":  # slot i holds what slot j holds
        copy = [_in_slot(p.part, i, rng) for p in layout[j]] if j != _PEG_SLOT else _moved_pegs(layout[j], i)
        marked, layout[i] = layout[i] + copy, copy
    elif name == "swapped":
        moved_i = _moved_pegs(layout[i], j) if i == _PEG_SLOT else [_in_slot(i_part, j, rng)]
        moved_j = _moved_pegs(layout[j], i) if j == _PEG_SLOT else [_in_slot(j_part, i, rng)]
        marked = layout[i] + layout[j] + moved_i + moved_j
        layout[i], layout[j] = moved_j, moved_i
    elif name == "wrong_colour":  # one of the pair in another colour of the palette
        slot = _PAIR[int(rng.integers(2))]
        others = [c for c in PALETTE if c != layout[slot][0].part.colour]
        recoloured = replace(layout[slot][0], part=replace(layout[slot][0].part, colour=others[rng.integers(4)]))
        marked, layout[slot] = [recoloured], [recoloured]
    else:  # wrong_count: a peg taken away or one more
        pegs = layout[_PEG_SLOT]
        if rng.random() < 0.5:
            marked, layout[_PEG_SLOT] = pegs[-1:], pegs[:-1]
        else:
            more = _pegs(_PEGS + 1, rng)
            while any(np.hypot(*(more[-1].centre - p.centre)) < 3 * p.part.size for p in pegs):
                more = _pegs(_PEGS + 1, rng)
            marked, layout[_PEG_SLOT] = more[-1:], [*pegs, more[-1]]
    image, mask = _render(size, rng, [p for slot in layout for p in slot], marked)
    return image, mask, name


def _moved_pegs(pegs: list[_Placement], slot: int) -> list[_Placement]:
    """The pegs as they lie, moved into ``slot``."""
    offset = np.array(_SLOT_CENTRES[slot]) - np.array(_SLOT_CENTRES[_PEG_SLOT])
    return [replace(peg, centre=peg.centre + offset) for peg in pegs]
