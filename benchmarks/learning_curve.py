# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Learning curve: per-class test metrics measured at chosen epochs during training.

Reconstruction models of the UniAD family learn slowly (the notes quote I-AUROC 79 after 10 epochs, 96.8
after 300), so a single number after a short CPU run says little; the curve says where the run stood and
how fast it was still improving. At the end of each chosen epoch the model predicts the TEST set (the
numbers are reported, never used to select a checkpoint) and the per-class table is kept.

Example:
    >>> curve = LearningCurve(epochs=[1, 5, 10])
    >>> curve.rows
    []
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_pnpt.evaluation.per_class import METRICS, evaluate_per_class


@torch.no_grad()
def evaluate_test_set(
    pl_module: LightningModule, test_loader: Iterable, map_size: int = 128, prepare: bool = True
) -> pd.DataFrame:
    """Per-class threshold-free metrics of a model's RAW predictions over a test loader (maps at ``map_size``).

    Leaves the model in eval mode. With ``prepare``, models with evaluation-time calibration (OneNIP's refiner
    scale) first refresh it from the training data of the trainer they are attached to (``prepare_for_evaluation``).
    """
    pl_module.eval()
    refresh = getattr(pl_module, "prepare_for_evaluation", None)
    if prepare and callable(refresh):
        refresh()
    categories, scores, labels, maps, masks = [], [], [], [], []
    size = (map_size, map_size)
    for batch in test_loader:
        images = pl_module.pre_processor.transform(batch.image.to(pl_module.device))
        # A prompt-pool module's raw prediction (a NetworkWithMemory's fused one); any other anomalib model's network.
        predict = getattr(pl_module, "predict_images", pl_module.model)
        output = predict(images)
        maps.append(torch.nn.functional.interpolate(output.anomaly_map.float(), size=size, mode="bilinear").cpu())
        mask = batch.gt_mask.float()[:, None]
        masks.append(torch.nn.functional.interpolate(mask, size=size, mode="nearest").bool().cpu())
        scores.append(output.pred_score.float().cpu())
        labels.append(batch.gt_label.cpu())
        categories += list(batch.category)
    table, _ = evaluate_per_class(
        categories, torch.cat(scores), torch.cat(labels), torch.cat(maps)[:, 0], torch.cat(masks)[:, 0]
    )
    return table


class LearningCurve(Callback):
    """Evaluate per-class metrics on the test set at the end of the given (1-based) epochs.

    Args:
        epochs: Epoch numbers after which to evaluate; 0 is the network before its first step.
        map_size: Side to which maps are resized for pixel metrics (bounds the cost of frequent evaluation).
    """

    def __init__(self, epochs: Sequence[int], map_size: int = 128, output: str | Path | None = None) -> None:
        super().__init__()
        self.epochs = sorted({int(e) for e in epochs})
        self.map_size = map_size
        self.output = Path(output) if output is not None else None
        self.rows: list[dict[str, Any]] = []
        self._start = time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the training clock."""
        del trainer, pl_module
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate the untrained network (epoch 0) if asked: after the prompt pool is built, before any step."""
        if trainer.current_epoch == 0 and 0 in self.epochs and not any(row["epoch"] == 0 for row in self.rows):
            self._evaluate(0, trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate if this epoch is one of :attr:`epochs`."""
        epoch = trainer.current_epoch + 1
        if epoch in self.epochs:
            self._evaluate(epoch, trainer, pl_module)

    @torch.no_grad()
    def _evaluate(self, epoch: int, trainer: Trainer, pl_module: LightningModule) -> None:
        """Predict the test set; keep the per-class rows (the training clock excludes this)."""
        evaluation_start = time.perf_counter()
        train_seconds = evaluation_start - self._start
        was_training = pl_module.training
        with torch.random.fork_rng():  # the evaluation must not change the training's random draws
            table = evaluate_test_set(pl_module, trainer.datamodule.test_dataloader(), self.map_size)
        for name, row in table.iterrows():
            self.rows.append(
                {"epoch": epoch, "train_s": train_seconds, "category": name, **{m: float(row[m]) for m in METRICS}}
            )
        if self.output is not None:  # written after every evaluation, so a run cut short keeps its points
            pd.DataFrame(self.rows).to_csv(self.output, index=False)
        if was_training:
            pl_module.train()
        self._start += time.perf_counter() - evaluation_start  # the training clock excludes evaluation
