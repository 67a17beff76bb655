# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""How long a model trains when the user does not say, and a calibrated, saved model at the end of any run.

Two things the trainer alone gets wrong for these models:

* Without ``max_epochs`` or ``max_steps`` Lightning trains for 1000 epochs. anomalib's habit is a model's
  ``trainer_arguments``, but anomalib's ``Engine`` lets those OVERRIDE what the user asked for, so a model that
  put its length there would silently ignore ``--trainer.max_epochs``. The callback instead applies the model's
  own length only when the trainer was given no length at all. Lightning fills in its 1000 before any callback
  runs, so ``max_epochs=1000`` without ``max_steps`` reads as "no length given"; to train exactly 1000 epochs
  of a model whose own length differs, also pass a ``max_steps`` the run cannot reach.
* The per-class calibration (normalisation and thresholds) is fitted in validation, and the checkpoint is
  written after it. The shipped configs validate once, at the last epoch (``check_val_every_n_epoch`` =
  ``max_epochs``); a user who shortens the run (``--trainer.max_epochs 1``) or lengthens it to a number that
  is not a multiple would otherwise end without a calibration for the final weights and, with anomalib's
  checkpoint callback, without a checkpoint. The callback makes the last epoch validate.

Example:
    >>> from lightning.pytorch import Trainer
    >>> # Lightning sets its fallback of 1000 when fitting starts without a length; the callback sees that.
    >>> trainer = Trainer(max_epochs=1000, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    >>> TrainingLength(default_max_epochs=300).setup(trainer, None, stage="fit")
    >>> trainer.max_epochs
    300
"""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)

# What Lightning's loop-limit parsing sets when the user gives neither ``max_epochs``, ``max_steps``, nor a
# ``max_time`` (it then sets ``max_epochs = -1``).
LIGHTNING_FALLBACK_MAX_EPOCHS = 1000


class TrainingLength(Callback):
    """The model's training length when none is given; validation (calibration) at the last epoch of every run.

    Args:
        default_max_epochs: Epochs to train when the trainer has no length of its own.
    """

    def __init__(self, default_max_epochs: int) -> None:
        self.default_max_epochs = default_max_epochs

    def setup(self, trainer: Trainer, pl_module: LightningModule | None, stage: str) -> None:
        """Before the optimiser and its schedule are made: the model's length if the user gave none."""
        del pl_module
        unset = trainer.max_epochs == LIGHTNING_FALLBACK_MAX_EPOCHS and trainer.max_steps == -1
        if stage == "fit" and unset and self.default_max_epochs != LIGHTNING_FALLBACK_MAX_EPOCHS:
            logger.warning(
                "No training length given (trainer.max_epochs / max_steps): training for the model's own %d epochs.",
                self.default_max_epochs,
            )
            trainer.fit_loop.max_epochs = self.default_max_epochs

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """At the last epoch: make it validate if ``check_val_every_n_epoch`` would skip it."""
        del pl_module
        every = trainer.check_val_every_n_epoch
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs
        if last and every is not None and every > 1 and trainer.max_epochs % every:
            logger.info("Last epoch: validating (calibration) although check_val_every_n_epoch=%d.", every)
            # Lightning reads this public Trainer attribute per epoch; there is no hook to request one validation.
            trainer.check_val_every_n_epoch = 1
