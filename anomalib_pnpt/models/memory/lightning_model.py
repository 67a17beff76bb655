# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A prompt-pool network and a per-class patch memory, as one anomalib model (beyond both papers).

The network (:class:`~anomalib_pnpt.Pnpt` or :class:`~anomalib_pnpt.OneNip`, given as plain data) trains as it
would alone, by its own recipe; when its prompt pool is built, every trained class also gets a patch memory of its
training images (PatchCore's coreset), one image in ``holdout`` kept out to measure the memory's normal range. At
inspection both see the image through one backbone pass and their maps are fused on the network's normal scale
(:mod:`~anomalib_pnpt.models.memory.fusion`). A product added after training (``add_class``) is scored by its memory.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> from anomalib_pnpt import NetworkWithMemory  # doctest: +SKIP
    >>> network = {"class_path": "anomalib_pnpt.OneNip", "init_args": {"preset": "cpu"}}
    >>> model = NetworkWithMemory(network)  # doctest: +SKIP
    >>> Engine(max_epochs=10).fit(model, datamodule=datamodule)  # doctest: +SKIP

CLI:
    ``anomalib train --config configs/onenip_memory_cpu.yaml``
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_pnpt.checkpoint_arguments import COMPONENTS
from anomalib_pnpt.data.items import PromptedPrediction
from anomalib_pnpt.models.memory.fusion import ClassFeatures, MemoryFusion
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule
from anomalib_pnpt.normal_scale import NormalScaleCalibration
from anomalib_pnpt.prompt_pool import ClassEntries

logger = logging.getLogger(__name__)

DEFAULT_NETWORK: dict[str, Any] = {"class_path": "anomalib_pnpt.OneNip", "init_args": {"preset": "cpu"}}


def build_network(network: dict[str, Any]) -> PromptedAnomalyModule:
    """The network module ``{"class_path": ..., "init_args": {...}}`` describes, without anomalib's components.

    Args:
        network: Class path of a prompt-pool model and its constructor arguments. Other keys beside those two are
            constructor arguments too: jsonargparse puts ``--model.network.init_args.hidden_dim 32`` there.

    Returns:
        The module (its pre-processor kept: the memory model's images go through it).
    """
    module_name, _, class_name = network["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, PromptedAnomalyModule)):
        msg = f"network must be a prompt-pool model (anomalib_pnpt.Pnpt or anomalib_pnpt.OneNip), got {cls}."
        raise TypeError(msg)
    given = {
        **network.get("init_args", {}),
        **{k: v for k, v in network.items() if k not in {"class_path", "init_args"}},
    }
    arguments = {k: v for k, v in given.items() if k not in COMPONENTS}
    return cls(**arguments, post_processor=False, evaluator=False, visualizer=False)


class NetworkWithMemory(NormalScaleCalibration, PromptedAnomalyModule):
    """A trained prompt-pool network fused with a per-class patch memory.

    Args:
        network: The network: ``{"class_path": "anomalib_pnpt.OneNip", "init_args": {...}}`` (``None``: OneNIP,
            ``cpu`` preset). Checkpoints record its resolved arguments.
        memory_layers: Backbone stages (among the network's ``layers``) whose maps make the memory's patches.
        memory_stride: Stride of the memory's patch grid.
        sampling_ratio: Coreset share of a class's patch vectors kept (PatchCore's 0.1).
        map_weight: ``w``, the memory's weight in the map (0: the network alone; 1: the memory alone).
        score_weight: ``w_s``, the memory's weight in the map the image score is taken from.
        holdout: One in this many of a class's training images is held out of its memory to measure its normal
            range; with ``all_images`` they then join it, as PatchCore keeps every image.
        all_images: Make each memory again from all its class's images once the range is measured.
        calibration_images: Normal training images on which the network's normal scale ``s`` is measured.
        pre_processor: anomalib pre-processor, or ``True`` for the network's.
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
    """

    training_arguments = frozenset({"holdout", "calibration_images"})

    def __init__(  # noqa: PLR0913
        self,
        network: dict[str, Any] | None = None,
        memory_layers: Sequence[int] = (2, 3),
        memory_stride: int = 8,
        sampling_ratio: float = 0.1,
        map_weight: float = 0.25,
        score_weight: float = 1.0,
        holdout: int = 10,
        all_images: bool = True,
        calibration_images: int = 256,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        given = dict(locals())
        network = network or DEFAULT_NETWORK
        built = build_network(network)
        super().__init__(  # the network owns the backbone, its pre-processing and its feature cache
            pre_processor=built.pre_processor if pre_processor is True else pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.network = built
        if holdout < 2:
            msg = f"holdout must be at least 2 (one in that many images is held out), got {holdout}."
            raise ValueError(msg)
        stages = list(built.model.feature_extractor.layers)
        missing = sorted(set(memory_layers) - set(stages))
        if missing:
            msg = f"memory_layers {list(memory_layers)}: stages {missing} are not among the network's layers {stages}."
            raise ValueError(msg)
        self.memory = MemoryFusion(
            built.model.feature_extractor.out_channels,
            [stages.index(stage) for stage in memory_layers],
            stride=memory_stride,
            sampling_ratio=sampling_ratio,
            map_weight=map_weight,
            score_weight=score_weight,
        )
        self.holdout = holdout
        self.all_images = all_images
        self.calibration_images = calibration_images
        # The checkpoint keeps the network's resolved arguments, so it rebuilds the same network.
        names = inspect.signature(type(built).__init__).parameters
        resolved = {k: v for k, v in built.hparams.items() if k in names and k not in COMPONENTS}
        self.hparams.update({"network": {"class_path": network["class_path"], "init_args": resolved}})
        self.record_given_arguments(given)

    # ------------------------------------------------------------------ the network's parts, as the module's
    @property
    def model(self) -> torch.nn.Module:  # type: ignore[override]
        """The network's torch model (its prompt pool is this model's)."""
        return self.network.model

    @property
    def default_max_epochs(self) -> int:  # type: ignore[override]
        """The network's training length."""
        return self.network.default_max_epochs

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The network's (gradient clipping, no sanity validation)."""
        return self.network.trainer_arguments

    def configure_optimizers(self) -> Any:
        """The network's optimiser and schedule (the memory has no parameters)."""
        return self.network.configure_optimizers()

    def setup(self, stage: str) -> None:
        """Seed as the network would (``seed``)."""
        self.network.setup(stage)

    def training_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], Callable[[], dict[str, torch.Tensor]]]:
        """The network's losses: it trains by its own recipe.

        Args:
            batch: A training batch.

        Returns:
            The network's ``(losses, fit measure)``.
        """
        return self.network.training_losses(batch)

    # ------------------------------------------------------------------ pool and memory
    def prompt_pool_ready(self) -> bool:
        """The network's pool is ready and every class has its memory."""
        return self.network.prompt_pool_ready() and len(self.memory.class_memory.normal_scales) >= max(
            1, self.prompt_pool.num_classes
        )

    @torch.no_grad()
    def build_prompt_pool(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[str]]],
        num_classes: int | None = None,
        reduce_across_ranks: bool = False,
    ) -> None:
        """The network's pool, and every trained class's memory from the same batches.

        Args:
            batches: Pre-processed ``(images, class_ids, paths)`` training batches (all of them on every rank: a
                class's memory needs all its images).
            num_classes: Number of classes; ``None`` means 1.
            reduce_across_ranks: Never set (``prompt_pool_splits_across_ranks`` is ``False``).
        """
        del reduce_across_ranks
        gathered = ClassFeatures()

        def gathering() -> Iterator[tuple[torch.Tensor, torch.Tensor, Sequence[str]]]:
            for images, class_ids, paths in batches:
                gathered.add(class_ids, self.memory_features(images))
                yield images, class_ids, paths

        self.network.build_prompt_pool(gathering(), num_classes)
        self.memory.class_memory.clear()  # the pool's classes are now all the network's
        for class_id, features in gathered.per_class():
            self.set_class_memory(class_id, features, held_out_share=True)

    def memory_features(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """The memory's features of pre-processed ``images``, ``batch_size`` at a time."""
        extract = self.model.feature_extractor
        return torch.cat([self.memory.features(extract(x), x.shape[-2:]) for x in images.split(batch_size)])

    def set_class_memory(self, index: int, features: torch.Tensor, held_out_share: bool) -> None:
        """Class ``index``'s memory from its images' features.

        Args:
            index: Class index.
            features: ``(N, C_m, h_m, w_m)`` memory features of its normal images.
            held_out_share: Hold every ``holdout``-th image out to measure the memory's normal range (a class the
                network trained on, whose map the memory's is added to); else all go in (scale 1).
        """
        held_out = torch.zeros(len(features), dtype=torch.bool)
        if held_out_share:
            held_out[:: self.holdout] = len(features) > 1  # one image alone goes to the memory (scale 1)
        start = time.perf_counter()
        features = features.to(self.device)
        memory = self.memory.class_memory
        kept = memory.set_class(index, features[~held_out], held_out=features[held_out], keep_held_out=self.all_images)
        logger.info(
            "Patch memory of class %d: %d patches, normal scale %.4f (%d held-out images), %.0f s",
            index,
            kept,
            float(memory.normal_scales[index]),
            int(held_out.sum()),
            time.perf_counter() - start,
        )

    def class_prompt_entries(self, images: torch.Tensor) -> ClassEntries:
        """The network's prompt-pool entries of a new class (see :meth:`PromptedAnomalyModule.add_class`)."""
        return self.network.class_prompt_entries(images)

    @property
    def untrained_class_scoring(self) -> str:
        """A class the network never trained on is scored by its memory alone."""
        return "memory"

    @torch.no_grad()
    def on_class_added(self, index: int, images: torch.Tensor, trained: bool) -> None:
        """The added class's memory: all its images, or, for a class the network trained on, some held out."""
        self.set_class_memory(index, self.memory_features(images), held_out_share=trained)

    def on_class_removed(self, index: int) -> None:
        """Its memory goes with the class."""
        self.memory.class_memory.remove_class(index)

    # ------------------------------------------------------------------ inspection
    def predict_images(self, images: torch.Tensor) -> PromptedPrediction:
        """The network's prediction with the memory's map fused in, from one backbone pass."""
        maps = self.model.feature_extractor(images)
        prediction = self.model.predict(images, maps)
        features = self.memory.features(maps, images.shape[-2:])
        return self.memory(prediction, features, self.prompt_pool, self.model.anomaly_map_generator.image_score)

    # ------------------------------------------------------------------ the network's normal scale (normal_scale.py)
    def needs_normal_scale(self) -> bool:
        """The memory's map is added on the network's scale."""
        return True

    def normal_map(self, images: torch.Tensor) -> torch.Tensor:
        """The network's own map."""
        return self.model.predict(images).anomaly_map

    def store_normal_scale(self, scale: float) -> None:
        """``MemoryFusion.network_scale``."""
        self.memory.network_scale.fill_(scale)

    def prepare_for_evaluation(self) -> None:
        """The network's own scales first (OneNIP's refiner), then ``s``."""
        if isinstance(self.network, NormalScaleCalibration):
            self.network.prepare_for_evaluation()
        super().prepare_for_evaluation()

    def on_validation_start(self) -> None:
        """The network's own scales first (OneNIP's refiner), then ``s``."""
        if isinstance(self.network, NormalScaleCalibration):
            self.network.on_validation_start()
        super().on_validation_start()

    def on_train_end(self) -> None:
        """The network's own scales first (OneNIP's refiner), then ``s``."""
        if isinstance(self.network, NormalScaleCalibration):
            self.network.on_train_end()
        super().on_train_end()
