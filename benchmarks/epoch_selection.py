# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Choose a training's epoch without a test image: validation images against defects no model trained on.

A reconstruction network's test figures rise and fall over a short CPU training (PNPT with ``prior_residual``:
epoch 3 above its prior on image AUROC, epoch 6 below it; at lr 1e-3 above it after epoch 1, collapsed after
epoch 2). Keeping the last epoch wastes the good ones; choosing on the test curve would tune on the test set. This
callback chooses on the validation images instead (normal images held out from training, the split that calibrates
the thresholds) and on synthetic-defect copies of them that neither model's training generator makes
(``unseen_defects.py``: scratches, stains, holes), the same copies at every epoch.

The rule, fixed before it was first run (stop 30): at the start of training (epoch 0: with ``prior_residual`` the
network is exactly its class-mean prior there, its correction starting at zero) and after every epoch, the model's
own map and score (what it predicts; for PNPT without a memory, Eq. 8's map) of the validation images and
``copies`` (4) copies of each; per class the image AUROC, pixel AUROC, pixel AP and PRO (maps at 128 px, as the
learning curve's), computed as the harness computes them (``evaluate_per_class``); the epoch's score is the mean of
the four figures' class means; the largest score wins, ties go to the earlier epoch. The chosen epoch's weights are
put back into the model when training ends (the harness then re-runs validation so the thresholds are the chosen
network's, and tests it).

Example:
    >>> selection = EpochSelection(copies=4)
    >>> selection.rows, selection.chosen_epoch
    ([], None)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from unseen_defects import UnseenDefects

from anomalib_pnpt.evaluation.per_class import evaluate_per_class
from anomalib_pnpt.pre_processing import backbone_normalization

FIGURES = ("image_AUROC", "pixel_AUROC", "pixel_AP", "PRO")


@dataclass
class DefectSet:
    """Pre-processed validation images and their unseen-defect copies, with what the figures need.

    Args:
        images: Batches of pre-processed images (each validation batch, then its copies).
        names: Class name of every image, in order.
        labels: 1 for a copy, 0 for a validation image.
        masks: Defect masks ``(N, map_size, map_size)`` (empty for the validation images).
    """

    images: list[torch.Tensor]
    names: list[str]
    labels: torch.Tensor
    masks: torch.Tensor


@torch.no_grad()
def unseen_defect_set(
    model: LightningModule, dataloader: Iterable, copies: int = 4, seed: int = 0, map_size: int = 128
) -> DefectSet:
    """The images of ``dataloader`` (the validation split) and ``copies`` copies of each with unseen defects.

    Args:
        model: The anomalib module whose pre-processor and backbone normalisation the images get.
        dataloader: Normal images held out from training.
        copies: Defective copies of each image.
        seed: Seed of the defect generator.
        map_size: Side of the masks.
    """
    mean, std = backbone_normalization(model.hparams["backbone"])
    generator = UnseenDefects(mean=mean, std=std, seed=seed)
    size = (map_size, map_size)
    images, names, masks, labels = [], [], [], []
    for batch in dataloader:
        normal = model.pre_processor.transform(batch.image.to(model.device))
        images.append(normal)
        masks.append(torch.zeros(len(normal), *size, dtype=torch.bool))
        labels.append(torch.zeros(len(normal), dtype=torch.long))
        names += list(batch.category)
        for _ in range(copies):
            defective, defect_masks = generator.copies_and_masks(normal)
            images.append(defective)
            resized = torch.nn.functional.interpolate(defect_masks[:, None].float().cpu(), size=size, mode="nearest")
            masks.append(resized[:, 0].bool())
            labels.append(torch.ones(len(normal), dtype=torch.long))
            names += list(batch.category)
    return DefectSet(images, names, torch.cat(labels), torch.cat(masks))


@torch.no_grad()
def defect_set_figures(model: LightningModule, defects: DefectSet) -> tuple[pd.DataFrame, float]:
    """Per-class figures (:data:`FIGURES`) of the model's own maps and scores, and the rule's score.

    Returns:
        ``(table, score)``: ``evaluate_per_class``'s table (classes and ``mean``) and the mean of the four figures'
        class means. Leaves the model in eval mode.
    """
    model.eval()
    size = tuple(defects.masks.shape[-2:])
    scores, maps = [], []
    for images in defects.images:
        output = model.model(images)
        maps.append(torch.nn.functional.interpolate(output.anomaly_map.float(), size=size, mode="bilinear").cpu())
        scores.append(output.pred_score.float().reshape(-1).cpu())
    table, _ = evaluate_per_class(
        defects.names, torch.cat(scores), defects.labels, torch.cat(maps)[:, 0], defects.masks
    )
    return table, sum(float(table.loc["mean", figure]) for figure in FIGURES) / len(FIGURES)


class EpochSelection(Callback):
    """Score every epoch on validation images and unseen synthetic defects; keep and restore the best weights.

    Args:
        copies: Defective copies of each validation image.
        map_size: Side to which maps and masks are resized for the pixel figures.
        seed: Seed of the defect generator (the copies are made once and reused at every epoch).
        output: CSV written after every epoch (per class and mean figures, the epoch's score).
    """

    def __init__(self, copies: int = 4, map_size: int = 128, seed: int = 0, output: str | Path | None = None) -> None:
        super().__init__()
        self.copies = copies
        self.map_size = map_size
        self.seed = seed
        self.output = Path(output) if output is not None else None
        self.rows: list[dict[str, Any]] = []
        self.chosen_epoch: int | None = None
        self._best_score = float("-inf")
        self._best_state: dict[str, torch.Tensor] | None = None
        self._defects: DefectSet | None = None

    def _score(self, epoch: int, pl_module: LightningModule) -> None:
        """Evaluate the model as it is now; keep its weights if it is the best so far."""
        start = time.perf_counter()
        was_training = pl_module.training
        table, score = defect_set_figures(pl_module, self._defects)
        for name, row in table.iterrows():
            self.rows.append({"epoch": epoch, "category": name, **{f: float(row[f]) for f in FIGURES}})
        self.rows.append({"epoch": epoch, "category": "score", "score": score, "eval_s": time.perf_counter() - start})
        if score > self._best_score:  # strictly: ties keep the earlier epoch
            self._best_score, self.chosen_epoch = score, epoch
            self._best_state = copy.deepcopy({k: v.detach().cpu() for k, v in pl_module.state_dict().items()})
        if self.output is not None:
            pd.DataFrame(self.rows).to_csv(self.output, index=False)
        if was_training:
            pl_module.train()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Before the first step (the prompt pool is built by then), prepare the images and score epoch 0."""
        if trainer.current_epoch == 0 and self._defects is None:
            with torch.random.fork_rng():  # the evaluation must not change the training's random draws
                loader = trainer.datamodule.val_dataloader()
                self._defects = unseen_defect_set(pl_module, loader, self.copies, self.seed, self.map_size)
                self._score(0, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the epoch just trained."""
        with torch.random.fork_rng():
            self._score(trainer.current_epoch + 1, pl_module)

    def restore(self, pl_module: LightningModule) -> int:
        """Put the chosen epoch's weights back into ``pl_module``; return the chosen epoch."""
        if self._best_state is None or self.chosen_epoch is None:
            msg = "EpochSelection scored no epoch: was it passed to the trainer that trained the model?"
            raise RuntimeError(msg)
        pl_module.load_state_dict(self._best_state)
        return self.chosen_epoch
