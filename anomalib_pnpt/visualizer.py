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

import torch
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item
from lightning.pytorch import LightningModule, Trainer

from anomalib_pnpt.captions import add_caption, caption_text, category_name


def _value(batch: Any, name: str, index: int) -> Any:
    """Item ``index`` of a batch field as a Python value, ``None`` when the batch has no such field."""
    values = getattr(batch, name, None)
    if values is None:
        return None
    values = values.reshape(-1) if isinstance(values, torch.Tensor) else values
    return values[index].item() if isinstance(values, torch.Tensor) else values[index]


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
        names = list(pl_module.prompt_categories)
        datamodule = trainer.datamodule
        for index, item in enumerate(batch):
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
            category = category_name(names, _value(batch, "pred_category_id", index))
            score, label = _value(batch, "pred_score", index), _value(batch, "pred_label", index)
            unknown = _value(batch, "pred_unknown", index)
            text = caption_text(
                category,
                None if score is None else float(score),
                None if label is None else bool(label),
                bool(unknown) if unknown is not None else False,
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
