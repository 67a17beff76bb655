# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Class-specific normality prompt pool, and the mixin by which a model fills it from the training data.

The pool holds, per training class, a retrieval KEY (a vector) and a PROMPT (one or more feature maps).
For PNPT both are class means over all normal training images (the "class-specific normality prompting
pool", CS-NPP): the key is the mean global coding, the prompt the mean multi-scale feature maps. At
inference the input's own key retrieves the class with the highest cosine similarity, and that class's
prompt is used, so no class label is needed, in torch or in an exported graph (an ``argmax`` and an
index into a buffer).

The pool is data, not parameters: sums and counts are accumulated batch by batch and divided once. Under
distributed training the model (:class:`PromptPoolMixin`) either splits the training batches across ranks
and the sums and counts are reduced over the ranks (class means, as PNPT's), or gives every rank all of them
(a choice among the images, as OneNIP's); either way every rank ends with the same pool. Everything
lives in registered buffers, so it is saved in checkpoints and exported; its size is only known when it is
built, so loading a checkpoint resizes the buffers to the saved shapes.

Example:
    >>> import torch
    >>> pool = PromptPool()
    >>> pool.begin(num_classes=2, key_dim=3, prompt_shapes=[(4, 2, 2)])
    >>> keys = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    >>> pool.accumulate(torch.tensor([0, 1]), keys, [torch.rand(2, 4, 2, 2)])
    >>> pool.finish()
    >>> pool.retrieve(torch.tensor([[0.1, 0.9, 0.0]])).class_ids.tolist()
    [1]
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from lightning.pytorch import LightningModule
from torch import distributed as dist
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, Subset

from anomalib_pnpt.data_sized_buffers import DataSizedBuffers
from anomalib_pnpt.unknown_class import UnknownClassBound

logger = logging.getLogger(__name__)


def is_tracing() -> bool:
    """Whether the current forward pass is being traced, compiled or exported."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting()


UNTRAINED_CLASS_SCORINGS = ("prompt", "network")
"""How a model may score a class added after training: by its prompt alone, or by the network as the others."""


def validate_untrained_class_scoring(value: str, allowed: Sequence[str] = UNTRAINED_CLASS_SCORINGS) -> str:
    """``value`` if it is one of ``allowed`` (default: :data:`UNTRAINED_CLASS_SCORINGS`).

    Raises:
        ValueError: Otherwise.
    """
    if value not in allowed:
        msg = f"untrained_class_scoring must be one of {tuple(allowed)}, got {value!r}."
        raise ValueError(msg)
    return value


class PromptPoolNotBuiltError(RuntimeError):
    """Raised when a model is used before its prompt pool was built from training data."""


class Retrieval(NamedTuple):
    """What the pool retrieves for a batch of keys.

    Attributes:
        class_ids: ``(B,)`` class of the most similar entry.
        prompts: That entry's prompt maps, ``[(B, *shape_i), ...]``.
        class_similarity: ``(B,)`` cosine similarity to the retrieved class's nearest training image: how well an
            image matches the class it was given.
        unknown: ``(B,)`` whether that is below the class's bound (an unknown product, see
            :mod:`anomalib_pnpt.unknown_class`).
    """

    class_ids: torch.Tensor
    prompts: list[torch.Tensor]
    class_similarity: torch.Tensor
    unknown: torch.Tensor


class ClassEntries(NamedTuple):
    """One class's pool entries made from its images (a model's rule), as :meth:`PromptPool.append` takes them.

    Attributes:
        keys: ``(E, D)`` retrieval keys of the ``entries_per_class`` entries.
        prompts: Per prompt map, ``(E, *shape_i)``.
        counts: ``(E,)`` images behind each entry.
        image_keys: ``(N, D)`` retrieval key of every image they were made from (the unknown-class rule's).
    """

    keys: torch.Tensor
    prompts: list[torch.Tensor]
    counts: torch.Tensor
    image_keys: torch.Tensor


class PromptPool(DataSizedBuffers):
    """Per-class keys and prompt feature maps, in buffers, retrieved by cosine similarity.

    Buffers: ``keys (E, D)``, ``prompt_<i> (E, *shape_i)`` per prompt map, ``counts (E,)``, ``trained (E,)`` and
    ``built`` (a 0-d bool), for ``E = C * entries_per_class`` entries ordered by class: PNPT keeps one entry per
    class (the class mean), OneNIP ``prompts_per_class`` (prompt images). ``trained`` says whether the network was
    trained with the entry's class (a class added afterwards is not: a model may score it differently). The keys of
    every image the pool was built from stay in ``unknown_class`` (:class:`UnknownClassBound`), which decides
    whether an image is of any known class.

    Args:
        num_prompts: Number of prompt maps per entry (e.g. 3 scales).
        entries_per_class: Entries per class.
    """

    def __init__(self, num_prompts: int = 1, entries_per_class: int = 1) -> None:
        super().__init__()
        self.num_prompts = num_prompts
        self.entries_per_class = entries_per_class
        self.register_buffer("keys", torch.zeros(0, 0))
        self.register_buffer("counts", torch.zeros(0))
        self.register_buffer("trained", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("built", torch.tensor(False))
        for index in range(num_prompts):
            self.register_buffer(f"prompt_{index}", torch.zeros(0))
        self.unknown_class = UnknownClassBound()
        self._image_keys: list[torch.Tensor] = []  # per image, while class means are accumulated
        self._image_classes: list[torch.Tensor] = []

    @property
    def num_entries(self) -> int:
        """Number of entries in the pool (0 before it is built)."""
        return int(self.keys.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes in the pool (0 before it is built)."""
        return self.num_entries // self.entries_per_class

    @property
    def prompts(self) -> list[torch.Tensor]:
        """The prompt buffers ``[(C, *shape_0), ...]``."""
        return [getattr(self, f"prompt_{index}") for index in range(self.num_prompts)]

    def begin(self, num_classes: int, key_dim: int, prompt_shapes: Sequence[Sequence[int]]) -> None:
        """Start (re)building class means: zero sums and counts sized for ``num_classes`` classes (one entry each)."""
        if self.entries_per_class != 1:
            msg = "Class means make one entry per class; a pool of several entries per class is set with set_entries."
            raise ValueError(msg)
        if len(prompt_shapes) != self.num_prompts:
            msg = f"Expected {self.num_prompts} prompt shapes, got {len(prompt_shapes)}."
            raise ValueError(msg)
        device = self.keys.device
        self.keys = torch.zeros(num_classes, key_dim, device=device)
        self.counts = torch.zeros(num_classes, device=device)
        self.trained = torch.ones(num_classes, dtype=torch.bool, device=device)  # the pool training builds
        for index, shape in enumerate(prompt_shapes):
            setattr(self, f"prompt_{index}", torch.zeros(num_classes, *shape, device=device))
        self.built = torch.tensor(False, device=device)
        self._image_keys, self._image_classes = [], []

    @torch.no_grad()
    def accumulate(self, class_ids: torch.Tensor, keys: torch.Tensor, prompts: Sequence[torch.Tensor]) -> None:
        """Add a batch of samples to the per-class sums.

        Args:
            class_ids: ``(B,)`` class index of each sample.
            keys: ``(B, D)`` retrieval keys.
            prompts: Per prompt map, ``(B, *shape_i)``.
        """
        class_ids = class_ids.to(self.keys.device).long()
        self.keys.index_add_(0, class_ids, keys.float())
        self._image_keys.append(keys.detach().float())
        self._image_classes.append(class_ids)
        self.counts.index_add_(0, class_ids, torch.ones_like(class_ids, dtype=self.counts.dtype))
        for buffer, values in zip(self.prompts, prompts, strict=True):
            buffer.index_add_(0, class_ids, values.float())

    @torch.no_grad()
    def finish(self, reduce_across_ranks: bool = False) -> None:
        """Divide the sums by the counts and mark the pool built.

        Args:
            reduce_across_ranks: Sum the sums and counts over all processes first: for when every rank
                accumulated a different part of the data. Leave it off when every rank saw all of it (the
                counts would be multiplied by the number of ranks).

        Raises:
            PromptPoolNotBuiltError: If a class received no sample.
        """
        tensors = [self.keys, self.counts, *self.prompts]
        image_keys = torch.cat(self._image_keys) if self._image_keys else self.keys.new_zeros(0, self.keys.shape[1])
        image_classes = torch.cat(self._image_classes) if self._image_classes else self.counts.new_zeros(0).long()
        if reduce_across_ranks and dist.is_available() and dist.is_initialized():
            for tensor in tensors:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            image_keys, image_classes = _gather_rows(image_keys), _gather_rows(image_classes)
        self._image_keys, self._image_classes = [], []
        empty = (self.counts == 0).nonzero().flatten().tolist()
        if empty:
            msg = f"Prompt pool: classes {empty} have no training sample."
            raise PromptPoolNotBuiltError(msg)
        shape = (-1,) + (1,) * (self.keys.dim() - 1)
        self.keys /= self.counts.view(shape)
        for prompt in self.prompts:
            prompt.div_(self.counts.view((-1,) + (1,) * (prompt.dim() - 1)))
        self.unknown_class.fit(image_keys, image_classes, self.num_classes)
        self.built = torch.tensor(True, device=self.keys.device)

    @torch.no_grad()
    def set_entries(
        self,
        class_ids: torch.Tensor,
        keys: torch.Tensor,
        prompts: Sequence[torch.Tensor],
        image_keys: torch.Tensor | None = None,
        image_classes: torch.Tensor | None = None,
    ) -> None:
        """Fill the pool with finished entries (chosen, not averaged), ``entries_per_class`` of every class.

        Args:
            class_ids: ``(E,)`` class of every entry; entries keep their order within a class.
            keys: ``(E, D)`` retrieval keys.
            prompts: Per prompt map, ``(E, *shape_i)``.
            image_keys: ``(N, D)`` keys of every image the entries were chosen from (default: the entries').
            image_classes: ``(N,)`` their classes.

        Raises:
            ValueError: If a class has another number of entries than ``entries_per_class``.
        """
        num_classes = int(class_ids.max()) + 1
        per_class = torch.bincount(class_ids.cpu().long(), minlength=num_classes)
        if (per_class != self.entries_per_class).any():
            msg = f"Every class needs {self.entries_per_class} entries; got {per_class.tolist()}."
            raise ValueError(msg)
        order = torch.sort(class_ids.long(), stable=True).indices
        device = self.keys.device
        self.keys = keys[order].to(device).float()
        self.counts = torch.ones(len(order), device=device)
        self.trained = torch.ones(len(order), dtype=torch.bool, device=device)
        for index, values in enumerate(prompts):
            setattr(self, f"prompt_{index}", values[order].to(device).float())
        if image_keys is None or image_classes is None:
            image_keys, image_classes = keys, class_ids
        self.unknown_class.fit(image_keys, image_classes, num_classes)
        self.built = torch.tensor(True, device=device)

    @torch.no_grad()
    def append(
        self,
        keys: torch.Tensor,
        prompts: Sequence[torch.Tensor],
        counts: torch.Tensor,
        trained: bool = False,
        image_keys: torch.Tensor | None = None,
    ) -> None:
        """Add one class's finished entries (``entries_per_class`` of them) after the existing ones.

        Args:
            keys: ``(E, D)`` retrieval keys.
            prompts: Per prompt map, ``(E, *shape_i)``.
            counts: ``(E,)`` images behind each entry.
            trained: Whether the network was trained with this class (e.g. a trained class given new prompts).
            image_keys: ``(N, D)`` keys of every image the entries were made from (default: the entries').
        """
        self.check_built()
        device = self.keys.device
        self.keys = torch.cat([self.keys, keys.to(device).float()])
        self.counts = torch.cat([self.counts, counts.to(device).float()])
        self.trained = torch.cat([self.trained, torch.full((len(keys),), trained, dtype=torch.bool, device=device)])
        for index, (buffer, values) in enumerate(zip(self.prompts, prompts, strict=True)):
            setattr(self, f"prompt_{index}", torch.cat([buffer, values.to(device).float()]))
        self.unknown_class.append(keys if image_keys is None else image_keys)

    @torch.no_grad()
    def remove_class(self, index: int) -> None:
        """Delete class ``index``'s entries; later classes move up one index.

        Args:
            index: Class index.
        """
        keep = torch.ones(self.num_entries, dtype=torch.bool, device=self.keys.device)
        keep[index * self.entries_per_class : (index + 1) * self.entries_per_class] = False
        self.keys, self.counts, self.trained = self.keys[keep], self.counts[keep], self.trained[keep]
        for number, buffer in enumerate(self.prompts):
            setattr(self, f"prompt_{number}", buffer[keep])
        self.unknown_class.remove(index)

    def may_hold_untrained_classes(self) -> bool:
        """Whether a class the network never trained on may be retrieved (always, while a graph is traced)."""
        return is_tracing() or not bool(self.trained.all())

    def route_untrained_classes(
        self,
        class_ids: torch.Tensor,
        network: tuple[torch.Tensor, torch.Tensor],
        prompt_only: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the network's ``(anomaly_map, score)`` or, for a class it never trained on, the prompt's.

        Args:
            class_ids: ``(B,)`` retrieved classes.
            network: ``(anomaly_map (B, 1, H, W), score (B,))`` of the trained network.
            prompt_only: The same from the retrieved prompt alone (no trained part).

        Returns:
            The chosen ``(anomaly_map, score)``; a graph (export) holds both and chooses by the pool's flags.
        """
        # ``trained`` is per entry; a class's entries share its flag (entries are grouped by class).
        untrained = ~self.trained[class_ids * self.entries_per_class]
        anomaly_map = torch.where(untrained.view(-1, 1, 1, 1), prompt_only[0], network[0])
        return anomaly_map, torch.where(untrained, prompt_only[1], network[1])

    def check_built(self) -> None:
        """Raise a clear error if the pool is empty (the model was never trained or built).

        Skipped while the model is being traced or exported: the check reads a tensor's value, which a graph
        cannot contain (an exported model is only ever made from a trained one).
        """
        if is_tracing():
            return
        if not bool(self.built):
            msg = (
                "The prompt pool is empty: it is built from the training images when training starts "
                "(PromptPoolMixin.on_train_start). Train the model (engine.fit) or load a trained "
                "checkpoint before testing, predicting or exporting."
            )
            raise PromptPoolNotBuiltError(msg)

    def retrieve(self, keys: torch.Tensor) -> Retrieval:
        """The most similar entry of every sample: its class and prompts, and whether it is of a known class.

        Args:
            keys: ``(B, D)`` query keys.

        Returns:
            :class:`Retrieval` ``(class_ids (B,), [prompt_i (B, *shape_i), ...], class_similarity (B,), unknown (B,))``.
        """
        entries = self.entry_similarity(keys).argmax(dim=-1)
        class_ids = torch.div(entries, self.entries_per_class, rounding_mode="floor")
        similarity, unknown = self.unknown_class(class_ids, keys)
        return Retrieval(class_ids, [buffer[entries] for buffer in self.prompts], similarity, unknown)

    def entry_similarity(self, keys: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every query to every entry, ``(B, E)``.

        Args:
            keys: ``(B, D)`` query keys.

        Returns:
            The similarities.
        """
        return F.normalize(keys, dim=-1) @ F.normalize(self.keys, dim=-1).T


def _gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``tensor`` (row counts may differ), concatenated in rank order."""
    count = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    largest = int(max(int(c) for c in counts))
    padded = tensor.new_zeros(largest, *tensor.shape[1:])
    padded[: len(tensor)] = tensor
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c)] for part, c in zip(parts, counts, strict=True)])


class PromptPoolMixin(ABC):
    """Makes a Lightning module the owner of its prompt pool: it builds the pool from the training data itself.

    As anomalib's ``MemoryBankMixin`` fits PatchCore's memory bank from its own hook, a module with this mixin
    fills its pool in ``on_train_start``, before the first optimisation step, unless the pool is ready (a
    trained or resumed checkpoint). ``rebuild_prompt_pool = True`` (a constructor argument of both models)
    builds it again even then, e.g. when resuming on new data; :meth:`fill_prompt_pool` does it from Python.

    The module implements :meth:`build_prompt_pool`, which receives ``(images, class_ids, paths)`` batches
    with images already pre-processed and on the module's device; the mixin supplies them from a fresh,
    unshuffled training dataloader of the datamodule (:func:`pool_dataloader`).

    Under distributed training, a module whose pool is a sum over images (``prompt_pool_splits_across_ranks``,
    PNPT's class means) gets every ``world_size``-th image on each rank and must reduce
    (``reduce_across_ranks=True``), so each rank runs the backbone on a ``1 / world_size`` share; any other
    module gets all the images on every rank and must choose the same prompts on each.

    Example:
        >>> PromptPoolMixin.prompt_pool_splits_across_ranks
        False
    """

    prompt_pool_splits_across_ranks: ClassVar[bool] = False
    rebuild_prompt_pool: bool = False
    prompt_categories: list[str]
    trained_categories: list[str]

    @property
    @abstractmethod
    def prompt_pool(self) -> PromptPool:
        """The pool this module owns."""

    @abstractmethod
    def build_prompt_pool(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[str]]],
        num_classes: int | None = None,
        reduce_across_ranks: bool = False,
    ) -> None:
        """Fill the pool from pre-processed training batches.

        Args:
            batches: ``(images, class_ids, paths)`` batches.
            num_classes: Number of classes; ``None`` means 1.
            reduce_across_ranks: Every rank got a different share of the images (only when
                ``prompt_pool_splits_across_ranks``): reduce before finishing.
        """

    def prompt_pool_ready(self) -> bool:
        """Whether training can start without (re)building the pool (a subclass may need more than the pool)."""
        return bool(self.prompt_pool.built)

    def on_train_start(self) -> None:
        """Build the pool before the first optimisation step unless it is ready (or build it again if asked)."""
        if self.prompt_pool_ready() and not self.rebuild_prompt_pool:
            return
        self.fill_prompt_pool()

    def fill_prompt_pool(self, datamodule: Any = None) -> None:
        """Build the pool from the training images of ``datamodule`` (default: the trainer's), on every rank.

        Args:
            datamodule: A datamodule with ``train_dataloader()`` (and ``categories``); ``None``: the one being
                trained on, or else the trainer's training loader.

        Raises:
            RuntimeError: Without a datamodule and outside training.
        """
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a trainer: a Python call with a datamodule
            trainer = None
        if datamodule is None and trainer is not None:
            datamodule = trainer.datamodule
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        splits = self.prompt_pool_splits_across_ranks
        if datamodule is not None:
            train_loader = datamodule.train_dataloader()
            split = splits and world_size > 1 and len(train_loader.dataset) >= world_size
            loader = pool_dataloader(train_loader, *((rank, world_size) if split else (0, 1)))
        elif trainer is not None:
            # Without a datamodule only the trainer's loader exists; under DDP its sampler already split it.
            split = world_size > 1
            if split and not splits:
                logger.warning("Prompt pool built from each rank's share of the images: ranks may differ.")
            loader = trainer.train_dataloader
        else:
            msg = "fill_prompt_pool needs a datamodule outside of training."
            raise RuntimeError(msg)
        categories = getattr(datamodule, "categories", None)
        num_classes = len(categories) if categories else None
        reduction = {"reduce_across_ranks": True} if split and splits else {}
        self.build_prompt_pool(preprocessed_batches(loader, self), num_classes=num_classes, **reduction)
        if categories:
            self.prompt_categories = list(categories)
            self.trained_categories = list(categories)  # the classes the network is (about to be) trained with
        pool = self.prompt_pool
        logger.info(
            "Prompt pool built: %d classes, %d entries of %s images",
            pool.num_classes,
            pool.num_entries,
            pool.counts.tolist(),
        )


def pool_dataloader(
    train_loader: DataLoader,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
) -> DataLoader:
    """The training images in a fixed order, or this rank's share of them, batched as the training loader.

    The training loader shuffles, and differently on every rank unless they share a seed; a fixed order
    makes the shares ``rank::world_size`` of the dataset a partition (every image counted exactly once over
    the ranks) and builds no distributed sampler, which would repeat images to even out the ranks. It also
    makes what is computed from it the same on every rank and in every run.

    Args:
        train_loader: The datamodule's training loader (its dataset, batch size, workers and collate).
        rank: This process's rank.
        world_size: Number of ranks sharing the images (1: all of them).
        limit: At most this many images, evenly spaced over the dataset (which lists one class after the
            other, so that every class is represented); ``None`` takes all.
    """
    dataset = train_loader.dataset
    indices = list(range(len(dataset)))
    if limit is not None and limit < len(indices):
        indices = sorted({round(i * (len(indices) - 1) / max(limit - 1, 1)) for i in range(limit)})
    indices = indices[rank::world_size]
    return DataLoader(
        Subset(dataset, indices),
        batch_size=train_loader.batch_size,
        shuffle=False,
        num_workers=train_loader.num_workers,
        collate_fn=train_loader.collate_fn,
    )


def preprocessed_batches(dataloader: Any, pl_module: LightningModule, progress_every_s: float = 10.0) -> Any:
    """Yield pre-processed ``(images, class_ids, paths)`` from a training dataloader.

    Building the pool runs the backbone over every training image before the first epoch (minutes on a CPU),
    so progress is logged every ``progress_every_s`` seconds.
    """
    transform: Callable = pl_module.pre_processor.transform if pl_module.pre_processor else (lambda x: x)
    warned = False
    dataset = getattr(dataloader, "dataset", None)
    total = len(dataset) if dataset is not None else "?"
    done, start = 0, time.perf_counter()
    last = start
    for batch in dataloader:
        done += len(batch.image)
        if time.perf_counter() - last > progress_every_s:
            last = time.perf_counter()
            logger.info("Building the prompt pool: %d / %s training images (%.0f s)", done, total, last - start)
        class_ids = getattr(batch, "category_id", None)
        if class_ids is None:
            if not warned:
                logger.warning("Training batches carry no category_id (single-class datamodule): one prompt class.")
                warned = True
            class_ids = torch.zeros(len(batch.image), dtype=torch.long)
        images = transform(batch.image.to(pl_module.device))
        yield images, class_ids.to(pl_module.device), list(batch.image_path)
