# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib's image visualizer with a caption: the retrieved class, the score and the verdict.

``anomalib test`` and ``anomalib predict`` save one picture per image through the model's visualizer. anomalib's
``ImageVisualizer`` shows the image, the heat map and the mask, but not which class the model retrieved nor what
it decided, which is what an inspector of a multi-class model reads first. This visualizer draws the same
pictures and adds :func:`~anomalib_pnpt.captions.add_caption` under each, with the same caption the deployment
overlay shows. The class names come from the model (``prompt_categories``), the class from the batch's
``pred_category_id`` that the model's test and predict steps attach.

Pictures land in one folder per class, ``images/<class>/<the image's path from its class folder on>`` (MVTec AD
layout: ``images/bottle/test/broken_large/000.png``), so same-named files of different classes or defects never
overwrite each other (:func:`picture_path`). The class is the image's own where the data names it, else the
retrieved one (``anomalib predict`` on a folder).

Example:
    >>> visualizer = MultiClassImageVisualizer()
    >>> visualizer.field_size
    (256, 256)
    >>> picture_path(Path("out"), "data/bottle/test/crack/000.png", "bottle").as_posix()
    'out/bottle/test/crack/000.png'
    >>> picture_path(Path("out"), "line3/2026-12-06/000.png", "bottle").as_posix()
    'out/bottle/2026-12-06/000.png'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item
from lightning.pytorch import LightningModule, Trainer

from anomalib_pnpt.captions import add_caption, batch_decisions, caption_text


def picture_path(output_dir: Path, image_path: str, class_name: str) -> Path:
    """Where the picture of ``image_path`` is saved: under its class, with its path from the class folder on.

    Args:
        output_dir: The pictures' folder (``<run>/images``).
        image_path: The image's file.
        class_name: Its class (the data's, else the retrieved one).

    Returns:
        The picture's file; its folder exists.
    """
    parts = Path(image_path).parts
    if class_name in parts[:-1]:
        start = len(parts) - 1 - parts[::-1].index(class_name)  # the class folder nearest the file
        relative = Path(*parts[start:])
    else:
        relative = Path(class_name, *parts[-2:])
    target = output_dir / relative.with_suffix(".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class MultiClassImageVisualizer(ImageVisualizer):
    """anomalib's ``ImageVisualizer`` whose pictures carry the retrieved class, score and verdict below them.

    Same arguments as anomalib's ``ImageVisualizer``.
    """

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save one captioned picture per image (as anomalib's visualizer does, plus the caption)."""
        del outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        decisions = batch_decisions(batch, list(pl_module.prompt_categories))
        for item, decision in zip(batch, decisions, strict=True):
            picture = visualize_image_item(
                item,
                fields=self.fields,
                overlay_fields=self.overlay_fields,
                field_size=self.field_size,
                fields_config=self.fields_config,
                overlay_fields_config=self.overlay_fields_config,
                text_config=self.text_config,
            )
            if picture is None:
                continue
            text = caption_text(
                decision["class"], decision["score"], decision["anomalous"], bool(decision["unknown_class"])
            )
            class_name = getattr(item, "category", None) or decision["class"]
            add_caption(picture, text).save(picture_path(Path(self.output_dir), item.image_path or "", class_name))

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """As for test batches."""
        self.on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
