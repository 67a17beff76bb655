# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Product classes added to and removed from a trained prompt-pool model, without training.

A module mixes :class:`ClassManagement` in; it has ``model.prompt_pool``, a
:class:`~anomalib_pnpt.per_class_calibration.PerClassPostProcessor`, ``prompt_categories`` /
``trained_categories``, ``predict_images`` and the pool's own rule for a class's entries
(:meth:`ClassManagement.class_prompt_entries`). The command line: ``anomalib-pnpt add-class`` / ``remove-class``.

Example:
    >>> model.add_class("gasket", "line3/gasket/good")  # doctest: +SKIP
    >>> model.remove_class("gasket")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anomalib_pnpt.data.dataset import load_rgb_array
from anomalib_pnpt.prompt_pool import ClassEntries

logger = logging.getLogger(__name__)


class ClassManagement:
    """``add_class`` / ``remove_class`` of an anomalib prompt-pool module."""

    model: Any
    post_processor: Any
    pre_processor: Any
    prompt_categories: list[str]
    trained_categories: list[str]
    device: torch.device
    training: bool

    def class_prompt_entries(self, images: torch.Tensor) -> ClassEntries:
        """Prompt-pool entries of one class from its pre-processed normal images (the model's own prompt rule).

        Args:
            images: ``(N, 3, H, W)`` pre-processed normal images of the class.

        Returns:
            The pool's ``entries_per_class`` entries (PNPT: one class mean; OneNIP: ``prompts_per_class`` images)
            and every image's key.
        """
        raise NotImplementedError

    @torch.no_grad()
    def add_class(
        self,
        name: str,
        images: torch.Tensor | Sequence[str | Path] | str | Path,
        calibration_share: float = 0.2,
        batch_size: int = 16,
    ) -> dict[str, Any]:
        """Add a product class to a trained, calibrated model from normal images, without training.

        The network is untouched: the class's prompt-pool entries are made from its images by the model's own
        rule (:meth:`class_prompt_entries`), and its per-class normalisation and thresholds are calibrated on
        held-out images of it (every ``1 / calibration_share``-th image, at least two), as validation does for
        the trained classes. A class of the same name is replaced (its entries and calibration are made anew;
        it moves to the last index). Exports of the model contain the class. The pool marks whether the network
        was trained with the class (``trained_categories``); by default a class the network never trained on is
        scored without it (``untrained_class_scoring``: PNPT by its prior, OneNIP by its prompt images' nearest
        patches, a network with a patch memory by the class's memory), because the networks do not carry over to a
        product they never saw.

        Args:
            name: Class name (what predictions report).
            images: Normal images: ``(N, 3, H, W)`` in ``[0, 1]``, image files, or a folder of them.
            calibration_share: Share of the images held out for calibration.
            batch_size: Images per forward pass.

        Returns:
            ``{"class", "index", "prompt_images", "calibration_images", "retrieved_share", "scored_by"}``:
            ``retrieved_share`` is the share of the held-out images the pool retrieves as this class (1.0 unless the
            class looks like another); ``scored_by`` is ``"network"`` for a class the network trained with, else
            the model's ``untrained_class_scoring`` (``"prompt"``: the class's prompt alone; ``"memory"``: its patch
            memory).

        Example:
            >>> model.add_class("gasket", "line3/gasket/good")  # doctest: +SKIP
        """
        if self.post_processor.num_classes != len(self.prompt_categories) or not self.prompt_categories:
            msg = "add_class needs a trained and calibrated model (train it, or load its checkpoint, first)."
            raise RuntimeError(msg)
        if name in self.prompt_categories:
            self.remove_class(name)
        prepared = self._prepared_images(images)
        if len(prepared) < 3:
            msg = f"Class '{name}': {len(prepared)} images given; at least 3 are needed (2 are held out to calibrate)."
            raise ValueError(msg)
        held_out = torch.zeros(len(prepared), dtype=torch.bool)
        held_out[torch.linspace(0, len(prepared) - 1, max(2, round(calibration_share * len(prepared)))).long()] = True
        was_training = self.training
        self.eval()
        device = self.device
        entries = self.class_prompt_entries(prepared[~held_out].to(device))
        trained = name in self.trained_categories
        self.model.prompt_pool.append(
            entries.keys, entries.prompts, entries.counts, trained=trained, image_keys=entries.image_keys
        )
        self.prompt_categories.append(name)
        index = len(self.prompt_categories) - 1
        self.on_class_added(index, prepared[~held_out].to(device), trained)
        scores, maps, class_ids = [], [], []
        for chunk in prepared[held_out].split(batch_size):
            raw = self.predict_images(chunk.to(device))
            scores.append(raw.pred_score.reshape(-1))
            maps.append(raw.anomaly_map)
            class_ids.append(raw.class_id.reshape(-1))
        self.post_processor.append_class(torch.cat(scores), torch.cat(maps))
        self.train(was_training)
        retrieved = float((torch.cat(class_ids) == index).float().mean())
        if retrieved < 1:
            logger.warning("Class '%s': the pool retrieves only %.0f %% of its held-out images.", name, 100 * retrieved)
        return {
            "class": name,
            "index": index,
            "prompt_images": int((~held_out).sum()),
            "calibration_images": int(held_out.sum()),
            "retrieved_share": retrieved,
            "scored_by": "network" if trained else self.untrained_class_scoring,
        }

    @property
    def untrained_class_scoring(self) -> str:
        """How a class the network never trained on is scored (the network's ``untrained_class_scoring``)."""
        return self.model.untrained_class_scoring

    def on_class_added(self, index: int, images: torch.Tensor, trained: bool) -> None:
        """Hook of :meth:`add_class`, after the pool entries and before calibration (default: nothing).

        A model that keeps more of a class than its pool entries (OneNIP's patch memory) makes it here.

        Args:
            index: The new class's index.
            images: ``(N, 3, H, W)`` its pre-processed images (not those held out for calibration).
            trained: Whether the network was trained with the class.
        """

    def on_class_removed(self, index: int) -> None:
        """Hook of :meth:`remove_class`, after the pool entries are removed (default: nothing).

        Args:
            index: The removed class's index (later classes move up one).
        """

    def remove_class(self, name: str) -> None:
        """Remove a class: its prompt-pool entries and calibration; later classes move up one index.

        Args:
            name: Class name.
        """
        if name not in self.prompt_categories:
            msg = f"Class '{name}' is not in the model (classes: {self.prompt_categories})."
            raise KeyError(msg)
        if len(self.prompt_categories) == 1:
            msg = "Cannot remove the model's only class."
            raise ValueError(msg)
        index = self.prompt_categories.index(name)
        self.model.prompt_pool.remove_class(index)
        self.on_class_removed(index)
        if self.post_processor.num_classes:
            self.post_processor.remove_class(index)
        self.prompt_categories.pop(index)

    def _prepared_images(self, images: torch.Tensor | Sequence[str | Path] | str | Path) -> torch.Tensor:
        """Pre-processed ``(N, 3, H, W)`` images from a tensor in ``[0, 1]``, image files or a folder."""
        if isinstance(images, torch.Tensor):
            return self.pre_processor.transform(images)
        from anomalib_pnpt.deploy import image_files  # checks every file before any work

        files = image_files(images) if isinstance(images, str | Path) else [Path(f) for f in images]
        tensors = [torch.from_numpy(load_rgb_array(f)).permute(2, 0, 1).float().div(255)[None] for f in files]
        return torch.cat([self.pre_processor.transform(t) for t in tensors])
