# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""One JSON line per image of ``anomalib test`` and ``anomalib predict``: retrieved class, score, verdict.

anomalib's CLI writes pictures and metrics, but not the decisions themselves: a line engineer who runs
``anomalib predict --data <folder>`` on a day's parts has no table of which part failed, and no way to compare
the CLI's answers with the exported model's. This callback (registered by the models) writes
``predictions.jsonl`` into the run's folder (the trainer's ``default_root_dir``), one line per image, after
the per-class post-processing::

    {"image_path": ".../000.png", "class": "bottle", "class_id": 0, "class_similarity": 0.97,
     "unknown_class": false, "score": 0.93, "anomalous": true}

The file is rewritten at the start of each test or predict run.

Example:
    >>> writer = PredictionWriter()
    >>> writer.filename
    'predictions.jsonl'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_pnpt.captions import batch_decisions


class PredictionWriter(Callback):
    """Write every test and predict image's class, score and verdict to ``<default_root_dir>/<filename>``.

    Args:
        filename: Name of the JSON-lines file.
    """

    def __init__(self, filename: str = "predictions.jsonl") -> None:
        self.filename = filename

    def _path(self, trainer: Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.filename

    def _start(self, trainer: Trainer) -> None:
        if trainer.is_global_zero:
            self._path(trainer).parent.mkdir(parents=True, exist_ok=True)
            self._path(trainer).write_text("")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a new file."""
        del pl_module
        self._start(trainer)

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a new file."""
        del pl_module
        self._start(trainer)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Append one line per image of the post-processed batch."""
        del outputs, batch_idx, dataloader_idx
        paths = batch.image_path if batch.image_path is not None else [None] * len(batch)
        decisions = batch_decisions(batch, list(pl_module.prompt_categories))
        with self._path(trainer).open("a") as file:
            for path, decision in zip(paths, decisions, strict=True):
                line = {"image_path": path, **decision}
                file.write(json.dumps(line) + "\n")

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


def read_predictions(path: str | Path) -> dict[str, dict[str, Any]]:
    """The lines of a ``predictions.jsonl`` keyed by image path.

    Args:
        path: The file.

    Returns:
        ``{image_path: {"class", "class_id", "score", "anomalous"}}``.
    """
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return {line.pop("image_path"): line for line in lines}
