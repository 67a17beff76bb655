# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The caption under every prediction picture: retrieved class, score and verdict, never cut off.

An inspector reads a picture by its caption: which product the model took the part for, how anomalous it
scored and what it decided. anomalib's ``add_text_to_image`` draws one line on top of the picture, sized from
the picture, so on a 256 px picture a long class name runs off the edge. Here the caption goes on a strip
below the picture and wraps to its width. Used by the deployment overlay (``deploy.overlay_picture``) and the
models' visualizer (``visualizer.MultiClassImageVisualizer``), so both read the same.

Example:
    >>> from PIL import Image
    >>> picture = add_caption(Image.new("RGB", (64, 64)), caption_text("hazelnut_toy", 0.93, True))
    >>> picture.width, picture.height > 64
    (64, True)
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw, ImageFont

_MARGIN = 4


def category_name(names: list[str], class_id: int | None) -> str | None:
    """The name of retrieved class ``class_id`` (``None`` when unknown or out of range).

    Args:
        names: The model's class names (``prompt_categories``).
        class_id: Retrieved class index.

    Returns:
        The name, or ``None``.
    """
    if class_id is None or not 0 <= int(class_id) < len(names):
        return None
    return names[int(class_id)]


def batch_decisions(batch: Any, names: list[str]) -> list[dict[str, Any]]:
    """Per image of a post-processed batch, what was decided: class, similarity, unknown flag, score, verdict.

    One reading of the batch for everything that reports decisions (the captions of
    ``visualizer.MultiClassImageVisualizer`` and the lines of ``prediction_writer.PredictionWriter``); a field the
    batch lacks gives ``None``.

    Args:
        batch: Post-processed test / predict batch (``pred_score``, ``pred_label``, and the attributes the models'
            steps and post-processor attach: ``pred_category_id``, ``pred_category_similarity``, ``pred_unknown``).
        names: The model's class names (``prompt_categories``).

    Returns:
        ``[{"class", "class_id", "class_similarity", "unknown_class", "score", "anomalous"}, ...]``.
    """
    size = len(batch)

    def column(name: str, convert: type) -> list[Any]:
        values = getattr(batch, name, None)
        return [None] * size if values is None else [convert(value) for value in values.reshape(-1).tolist()]

    rows = zip(
        column("pred_category_id", int),
        column("pred_category_similarity", float),
        column("pred_unknown", bool),
        column("pred_score", float),
        column("pred_label", bool),
        strict=True,
    )
    return [
        {
            "class": category_name(names, class_id),
            "class_id": class_id,
            "class_similarity": similarity,
            "unknown_class": unknown,
            "score": score,
            "anomalous": label,
        }
        for class_id, similarity, unknown, score, label in rows
    ]


def caption_text(category: str | None, score: float | None, anomalous: bool | None, unknown_class: bool = False) -> str:
    """``"<class> | score 0.931 | ANOMALOUS"``, leaving out what is not given.

    Args:
        category: Retrieved class name.
        score: Normalised image score.
        anomalous: The verdict (``pred_label``).
        unknown_class: The image is of no class the model knows (``category`` is then only the nearest one).

    Returns:
        The caption.
    """
    parts = []
    if unknown_class:
        parts.append(f"UNKNOWN CLASS (nearest: {category})")
    elif category is not None:
        parts.append(category)
    if score is not None:
        parts.append(f"score {score:.3f}")
    if anomalous is not None:
        parts.append("ANOMALOUS" if anomalous else "normal")
    return " | ".join(parts)


def _wrapped(text: str, font: ImageFont.ImageFont, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word wider than the line is first split by characters."""

    def fits(piece: str) -> bool:
        return draw.textlength(piece, font=font) <= width

    pieces: list[str] = []
    for word in text.split():
        while len(word) > 1 and not fits(word):
            cut = next(i for i in range(len(word) - 1, 0, -1) if fits(word[:i]) or i == 1)
            pieces.append(word[:cut])
            word = word[cut:]  # noqa: PLW2901 - the rest of the word is wrapped on
        pieces.append(word)
    lines: list[str] = []
    for piece in pieces:
        if lines and fits(f"{lines[-1]} {piece}"):
            lines[-1] = f"{lines[-1]} {piece}"
        else:
            lines.append(piece)
    return lines


def add_caption(image: Image.Image, text: str) -> Image.Image:
    """The picture with a black strip below it holding ``text``, wrapped to the picture's width.

    Args:
        image: The picture.
        text: The caption (see :func:`caption_text`).

    Returns:
        A new RGB picture, as wide as ``image`` and taller by the caption's lines.
    """
    if not text:
        return image.convert("RGB")
    font = ImageFont.load_default(size=max(10, image.width // 20))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrapped(text, font, image.width - 2 * _MARGIN, measure)
    left, top, right, bottom = measure.textbbox((0, 0), "Ag", font=font)
    del left, right
    line_height = bottom - top + _MARGIN
    strip = len(lines) * line_height + _MARGIN
    result = Image.new("RGB", (image.width, image.height + strip), "black")
    result.paste(image.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(result)
    for index, line in enumerate(lines):
        draw.text((_MARGIN, image.height + _MARGIN + index * line_height - top), line, fill="white", font=font)
    return result
