# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib's image visualizer with a caption: the retrieved class, the score and the verdict.

``anomalib test`` and ``anomalib predict`` save one picture per image through the model's visualizer. anomalib's
``ImageVisualizer`` shows the image, the heat map and the mask, but not which class the model retrieved nor what
it decided, which is what an inspector of a multi-class model reads first. This visualizer draws the same
pictures and adds :func:`~anomalib_pnpt.captions.add_caption` under each, with the same caption the deployment
overlay shows. The class names come from the model (``prompt_categories``), the class from the batch's
``pred_category_id`` that the model's test and predict steps attach.

Example:
    >>> visualizer = MultiClassImageVisualizer()
    >>> visualizer.field_size
    (256, 256)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item
from lightning.pytorch import LightningModule, Trainer

from anomalib_pnpt.captions import add_caption, batch_decisions, caption_text


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
        datamodule = trainer.datamodule
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
            filename = generate_output_filename(
                input_path=item.image_path or "",
                output_path=self.output_dir,
                dataset_name=getattr(datamodule, "name", None),
                category=getattr(datamodule, "category", None),
            )
            add_caption(picture, text).save(filename)

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
