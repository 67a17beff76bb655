# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Per-class evaluation of any anomalib model after ``engine.test`` on multi-class data.

anomalib pools its metrics over the whole test set and computes them on post-processed (normalised and
clamped to ``[0, 1]``) scores, so classes whose scores run high or low distort each other and ties
appear at the clamp. :class:`PerClassEvaluation` keeps the RAW predictions of every test batch, groups
them by class and computes image AUROC, image AP, pixel AUROC, pixel AP and PRO per class and their
mean over classes, as both papers' multi-class protocol does.

The callback must run before anomalib's ``PostProcessor`` callback; the multi-class datamodules insert
it first in the trainer's list, and callbacks given to ``Engine(callbacks=...)`` already precede the
model's own.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> evaluation = PerClassEvaluation()
    >>> engine = Engine(callbacks=[evaluation])  # doctest: +SKIP
    >>> engine.test(model, datamodule=datamodule)  # doctest: +SKIP
    >>> evaluation.table  # pandas DataFrame, one row per class + "mean"  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from anomalib.post_processing import PostProcessor
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.distributed import gather_samples, is_distributed
from anomalib_pnpt.evaluation.metrics import auroc, average_precision, f1_max, pro_score

logger = logging.getLogger(__name__)

METRICS = ("image_AUROC", "image_AP", "pixel_AUROC", "pixel_AP", "PRO")


def evaluate_per_class(
    categories: list[str],
    scores: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    pro_fpr_limit: float = 0.3,
) -> tuple[pd.DataFrame, list[str]]:
    """Compute the per-class metric table from raw predictions.

    Args:
        categories: Class name of every test image.
        scores: Raw image scores ``(N,)``.
        labels: Image labels ``(N,)``, 1 = defect.
        maps: Raw anomaly maps ``(N, H, W)`` (optional: pixel metrics are ``nan`` without them).
        masks: Ground-truth masks ``(N, H, W)`` (optional).
        pro_fpr_limit: FPR limit of PRO.

    Returns:
        The table (index: classes then ``"mean"``; columns :data:`METRICS` plus image counts) and a list
        of notes naming every metric that could not be computed and why.
    """
    rows: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for name in sorted(set(categories)):
        index = torch.tensor([c == name for c in categories])
        cls_labels = labels[index].long()
        n_defect = int(cls_labels.sum())
        n_normal = len(cls_labels) - n_defect
        row = {
            "n_normal": float(n_normal),
            "n_defect": float(n_defect),
            "image_AUROC": auroc(scores[index], cls_labels),
            "image_AP": average_precision(scores[index], cls_labels),
        }
        if n_normal == 0:
            notes.append(f"{name}: no normal test images -> image_AUROC cannot be computed")
        if n_defect == 0:
            notes.append(f"{name}: no defect test images -> image_AUROC and image_AP cannot be computed")
        if maps is not None and masks is not None:
            cls_maps, cls_masks = maps[index], masks[index].bool()
            row["pixel_AUROC"] = auroc(cls_maps, cls_masks)
            row["pixel_AP"] = average_precision(cls_maps, cls_masks)
            row["PRO"] = pro_score(cls_maps, cls_masks, pro_fpr_limit)
            if not bool(cls_masks.any()):
                notes.append(
                    f"{name}: no defect pixels in the masks -> pixel_AUROC, pixel_AP and PRO cannot be computed"
                )
        else:
            row.update({"pixel_AUROC": math.nan, "pixel_AP": math.nan, "PRO": math.nan})
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")[[*METRICS, "n_normal", "n_defect"]]
    # The mean over classes skips classes where a metric is undefined (and says so in the notes).
    mean = table[list(METRICS)].mean(axis=0, skipna=True)
    table.loc["mean"] = [*mean.tolist(), table["n_normal"].sum(), table["n_defect"].sum()]
    table[["n_normal", "n_defect"]] = table[["n_normal", "n_defect"]].astype(int)
    return table, notes


def format_table(table: pd.DataFrame) -> str:
    """Render the table as Markdown with metrics in percent (one decimal)."""
    shown = table.copy()
    for column in METRICS:
        shown[column] = shown[column].map(lambda v: "n/a" if pd.isna(v) else f"{100 * v:.1f}")
    return shown.to_markdown()


class PerClassEvaluation(Callback):
    """Collect raw test predictions and report threshold-free metrics per class.

    After the test epoch the table is printed, logged (``per_class/<class>/<metric>``), kept in
    :attr:`table` and written as ``per_class_metrics.csv`` and ``per_class_metrics.json`` into ``output_dir``
    (default: the trainer's ``default_root_dir``, i.e. anomalib's run directory).

    Args:
        output_dir: Where to write the files; ``None`` uses the run directory.
        pro_fpr_limit: FPR limit of PRO.
        map_size: Optional side to which maps and masks are resized (nearest for masks, bilinear for
            maps) before pixel metrics, to bound memory on large test sets; ``None`` keeps full size.

    Example:
        >>> callback = PerClassEvaluation(map_size=128)
        >>> callback.table is None
        True
    """

    def __init__(
        self, output_dir: str | Path | None = None, pro_fpr_limit: float = 0.3, map_size: int | None = None
    ) -> None:
        super().__init__()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.pro_fpr_limit = pro_fpr_limit
        self.map_size = map_size
        self.table: pd.DataFrame | None = None
        self.pooled: dict[str, float] | None = None  # image AUROC and best F1 over ALL test images, raw scores
        self.notes: list[str] = []
        self._buffers: dict[str, list[Any]] = defaultdict(list)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget predictions of an earlier test run; refuse to run after a post-processor.

        Raises:
            RuntimeError: If an anomalib post-processor comes before this callback in the trainer's list: it
                replaces the batch's scores with clamped normalised ones in place, so the table would be wrong.
                Lightning runs the trainer's own callbacks before the model's (anomalib's post-processor is one),
                so ``Engine(callbacks=[PerClassEvaluation()])`` and the datamodule's attachment are both safe.
        """
        del pl_module
        order = list(trainer.callbacks)
        first_post = next((i for i, c in enumerate(order) if isinstance(c, PostProcessor)), None)
        if first_post is not None and self in order and first_post < order.index(self):
            msg = (
                "PerClassEvaluation must run before the model's post-processor, which normalises and clamps the "
                "scores in place: pass it to the Engine/Trainer callbacks, not to the model's callbacks."
            )
            raise RuntimeError(msg)
        self._buffers = defaultdict(list)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep a copy of the batch's raw scores, maps, labels, masks and classes."""
        del trainer, pl_module, batch_idx, dataloader_idx
        predictions = outputs if outputs is not None else batch
        batch_size = len(predictions.pred_score)
        categories = getattr(batch, "category", None) or ["all"] * batch_size
        self._buffers["category"].extend(categories)
        paths = getattr(batch, "image_path", None)
        self._buffers["path"].extend(paths if paths is not None else [None] * batch_size)
        self._buffers["score"].append(predictions.pred_score.detach().float().cpu().reshape(-1))
        self._buffers["label"].append(batch.gt_label.detach().cpu().reshape(-1))
        if predictions.anomaly_map is not None and batch.gt_mask is not None:
            maps = predictions.anomaly_map.detach().float().reshape(batch_size, 1, *predictions.anomaly_map.shape[-2:])
            masks = batch.gt_mask.detach().reshape(batch_size, 1, *batch.gt_mask.shape[-2:]).float()
            size = (self.map_size, self.map_size) if self.map_size else masks.shape[-2:]
            if maps.shape[-2:] != size:
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
            if masks.shape[-2:] != size:
                masks = F.interpolate(masks, size=size, mode="nearest")
            self._buffers["map"].append(maps[:, 0].cpu())
            self._buffers["mask"].append(masks[:, 0].bool().cpu())

    def compute(self) -> pd.DataFrame:
        """Compute the table from what was collected (also called at the end of the test epoch)."""
        maps = torch.cat(self._buffers["map"]) if self._buffers["map"] else None
        masks = torch.cat(self._buffers["mask"]) if self._buffers["mask"] else None
        if maps is not None and len(maps) != len(self._buffers["category"]):
            maps = masks = None  # some batches had no masks: pixel metrics would be misaligned
        scores, labels = torch.cat(self._buffers["score"]), torch.cat(self._buffers["label"])
        self.table, self.notes = evaluate_per_class(
            self._buffers["category"], scores, labels, maps, masks, self.pro_fpr_limit
        )
        # One decision rule for every class at once (what a line with one threshold sees), on raw scores.
        self.pooled = {"image_AUROC": auroc(scores, labels), "image_F1max": f1_max(scores, labels)}
        return self.table

    def _gather_from_all_ranks(self, trainer: Trainer) -> None:
        """Under distributed testing, replace this rank's predictions with every rank's, each image once.

        Each rank tests its share of the images (plus the images the distributed sampler repeats), so a
        table from one rank's buffers would be computed on part of the test set.
        """
        if not is_distributed(trainer):
            return
        buffers = self._buffers
        # Maps and masks are appended together per batch; a batch without them makes the lists shorter: no pixel
        # metrics then (as in compute).
        maps_aligned = len(buffers["map"]) == len(buffers["score"])
        columns = {
            "category": list(buffers["category"]),
            "score": torch.cat(buffers["score"]),
            "label": torch.cat(buffers["label"]),
            "map": torch.cat(buffers["map"]) if maps_aligned else None,
            "mask": torch.cat(buffers["mask"]) if maps_aligned else None,
        }
        paths = buffers["path"] if None not in buffers["path"] else None
        merged, gathered_paths = gather_samples(trainer, columns, paths)
        self._buffers = defaultdict(list, {name: [value] for name, value in merged.items() if value is not None})
        self._buffers["category"] = merged["category"]
        self._buffers["path"] = gathered_paths or []

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute, print, log and write the per-class table (from all ranks' predictions under DDP)."""
        if not self._buffers["score"]:
            return
        self._gather_from_all_ranks(trainer)
        table = self.compute()
        for note in self.notes:
            logger.warning(note)
        for name, row in table.iterrows():
            for metric in METRICS:
                if not pd.isna(row[metric]):  # the same value on every rank: no reduction needed
                    pl_module.log(f"per_class/{name}/{metric}", float(row[metric]), sync_dist=False)
        if not trainer.is_global_zero:
            return
        text = format_table(table)
        print(f"\nPer-class metrics ({type(pl_module).__name__}, threshold-free, raw scores):\n{text}")
        output_dir = self.output_dir or Path(trainer.default_root_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(output_dir / "per_class_metrics.csv", index_label="category")
        payload = {
            "model": type(pl_module).__name__,
            "metrics": {
                name: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for name, row in table.iterrows()
            },
            "notes": self.notes,
        }
        (output_dir / "per_class_metrics.json").write_text(json.dumps(payload, indent=2))
        logger.info("Per-class metrics written to %s", output_dir)
