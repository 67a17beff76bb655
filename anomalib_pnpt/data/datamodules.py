# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Multi-class datamodules: one anomalib datamodule over many categories.

anomalib's datamodules take a single ``category``. These take a list (default: every category found
under ``root``), build each category's stock anomalib dataset, check the folder for the mistakes that
would otherwise be silently dropped or fail with an unclear message, and concatenate them into a
:class:`~anomalib_pnpt.data.dataset.MultiClassDataset` whose items carry ``category`` and
``category_id``.

Two things happen on ``setup`` so that a stock anomalib workflow gives per-class results without extra
arguments:

* ``name`` is the root folder's name, so anomalib's visualiser keeps the ``<category>/test/<defect>``
  part of every image path and pictures of different classes never overwrite each other;
* a :class:`~anomalib_pnpt.evaluation.PerClassEvaluation` callback is put FIRST in the trainer's callback
  list (``per_class_evaluation=True``), so it sees raw scores before anomalib's post-processor clamps them.

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> from anomalib.models import Padim  # doctest: +SKIP
    >>> root = "../shared/data/industrial"  # the shared real data (absent on a user's machine)
    >>> datamodule = MultiClassMVTecAD(root=root, categories=["bottle", "hazelnut_toy"])  # doctest: +SKIP
    >>> engine = Engine()  # doctest: +SKIP
    >>> engine.fit(Padim(), datamodule=datamodule)  # doctest: +SKIP
    >>> engine.test(datamodule=datamodule)  # prints and writes the per-class table  # doctest: +SKIP

CLI:
    ``anomalib train --model Padim --data anomalib_pnpt.data.MultiClassMVTecAD --data.root DIR
    --data.categories "[bottle,hazelnut_toy]"``
"""

from __future__ import annotations

import logging
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from anomalib.data import AnomalibDataModule
from anomalib.data.datasets import BTechDataset, FolderDataset, MVTecADDataset, VisaDataset
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image
from torchvision.transforms.v2 import Transform

from anomalib_pnpt.data.dataset import MultiClassDataset

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataLayoutError(ValueError):
    """Raised when the dataset folder does not have the layout or content the datamodule needs."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _by_stem(image_dir: Path, mask_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and masks of two folders keyed by the stem they pair on (a mask's ``_mask`` suffix removed)."""
    images = {p.stem: p for p in _images_in(image_dir)} if image_dir.is_dir() else {}
    masks = {p.stem.removesuffix("_mask"): p for p in _images_in(mask_dir)} if mask_dir.is_dir() else {}
    return images, masks


def unpaired_images_and_masks(image_dir: Path, mask_dir: Path) -> list[str]:
    """Describe every defect image without a mask and every mask without an image in two folders.

    Masks may be named like their image (``000.png``) or with a ``_mask`` suffix (``000_mask.png``), with any
    image extension.

    Args:
        image_dir: Folder of defect images.
        mask_dir: Folder of their masks (may be missing: then every image is unpaired).

    Returns:
        One line per problem, naming the file.
    """
    images, masks = _by_stem(image_dir, mask_dir)
    problems = [f"defect image without mask: {images[s]}" for s in sorted(set(images) - set(masks))]
    return problems + [f"mask without defect image: {masks[s]}" for s in sorted(set(masks) - set(images))]


def image_mask_pairs(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Defect images and their masks in two folders, paired by stem (a ``_mask`` suffix allowed)."""
    images, masks = _by_stem(image_dir, mask_dir)
    return [(images[stem], masks[stem]) for stem in sorted(set(images) & set(masks))]


def unreadable_images_and_mask_sizes(files: Sequence[Path], pairs: Sequence[tuple[Path, Path]]) -> list[str]:
    """Describe every image file PIL cannot verify and every mask whose size differs from its image's.

    Reads headers and (for PNG) chunk checksums, not pixels, so a category's check takes seconds: a truncated
    or corrupt file is named before training starts instead of failing a test run hours later.

    Args:
        files: Image files to verify.
        pairs: ``(defect image, mask)`` pairs whose sizes must match.

    Returns:
        One line per problem, naming the file.

    Example:
        >>> unreadable_images_and_mask_sizes([], [])
        []
    """
    problems, sizes = [], {}
    for path in files:
        try:
            with Image.open(path) as image:
                sizes[path] = image.size
                image.verify()
        except (OSError, SyntaxError, ValueError) as error:  # PIL's corrupt / truncated / unknown-format errors
            problems.append(f"unreadable image: {path} ({type(error).__name__}: {error})")
    for image, mask in pairs:
        if image in sizes and mask in sizes and sizes[image] != sizes[mask]:
            problems.append(f"mask size {sizes[mask]} differs from its image's {sizes[image]}: {mask}")
    return problems


def _defect_dirs(test_dir: Path, normal_names: Sequence[str]) -> list[Path]:
    """The defect folders under a category's ``test/`` (every sub-folder but the normal ones), sorted."""
    return sorted(p for p in test_dir.iterdir() if p.is_dir() and p.name not in normal_names)


def _raise_problems(header: str, problems: list[str]) -> None:
    """Raise one ``DataLayoutError`` listing (up to 20 of) the problems, if any (``{count}`` in the header)."""
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        msg = f"{header.format(count=len(problems))}:\n  {shown}{more}"
        raise DataLayoutError(msg)


def check_defect_masks(category_root: Path, normal_names: Sequence[str] = ("good",)) -> None:
    """Check that every defect image under ``test/`` has a mask under ``ground_truth/`` and vice versa.

    Without this check anomalib either pairs images and masks by sorted position
    (silently wrong) or fails with a length mismatch that names no file.

    Args:
        category_root: ``<root>/<category>``.
        normal_names: Folder names under ``test/`` that hold normal images.

    Raises:
        DataLayoutError: Naming every unpaired image and mask.
    """
    test_dir, truth_dir = category_root / "test", category_root / "ground_truth"
    if not test_dir.is_dir() or not truth_dir.is_dir():
        return
    problems: list[str] = []
    for defect_dir in _defect_dirs(test_dir, normal_names):
        problems += unpaired_images_and_masks(defect_dir, truth_dir / defect_dir.name)
    _raise_problems(f"{category_root.name}: {{count}} unpaired defect images / masks", problems)


class MultiClassDataModule(AnomalibDataModule, ABC):
    """Base class: a datamodule over several categories of one dataset root.

    Subclasses say how to find categories and how to build one category's anomalib dataset.

    Args:
        root: Dataset root holding one folder per category.
        categories: Categories to use; ``None`` uses every category found. Order does not matter: the list
            is sorted, and ``category_id`` is the index in the sorted list.
        train_batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        num_workers: Dataloader workers.
        train_augmentations: Optional transform for training images.
        val_augmentations: Optional transform for validation images.
        test_augmentations: Optional transform for test images.
        augmentations: Optional transform for all splits.
        test_split_mode: anomalib's test split mode.
        test_split_ratio: Fraction of normal training images moved to the test set for synthetic modes.
        val_split_mode: anomalib's validation split mode. Default ``from_train``: a fraction of every
            class's normal training images is held out, so thresholds are calibrated per class without
            touching the test set (anomalib's MVTecAD uses ``same_as_test``, i.e. calibrates on the test set).
        val_split_ratio: Fraction for the validation split (with ``from_train``: of each class's training
            images, at least one per class).
        seed: Seed for the random splits.
        per_class_evaluation: Attach :class:`~anomalib_pnpt.evaluation.PerClassEvaluation` on setup.
    """

    normal_test_dirs: tuple[str, ...] = ("good",)

    # Many arguments: anomalib's datamodule arguments, flat for its CLI, plus the multi-class ones.
    def __init__(  # noqa: PLR0913
        self,
        root: str | Path,
        categories: Sequence[str] | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 4,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_TRAIN,
        val_split_ratio: float = 0.1,
        seed: int | None = None,
        per_class_evaluation: bool = True,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.root = Path(root)
        self.per_class_evaluation = per_class_evaluation
        self.categories = self._resolve_categories(categories)
        self.category = "+".join(self.categories) if len(self.categories) <= 4 else f"{len(self.categories)}_classes"

    @property
    def name(self) -> str:
        """The root folder's name (anomalib uses it for the results path and to shorten image paths)."""
        return self.root.resolve().name

    @property
    def num_categories(self) -> int:
        """Number of categories."""
        return len(self.categories)

    @abstractmethod
    def find_categories(self) -> list[str]:
        """Return every category present under ``root``, sorted."""

    @abstractmethod
    def make_category_dataset(self, category: str, split: Split) -> AnomalibDataset:
        """Build the stock anomalib dataset of one category and split."""

    def check_category(self, category: str) -> None:
        """Check one category's folder before anomalib reads it (override per layout)."""

    def _resolve_categories(self, categories: Sequence[str] | None) -> list[str]:
        if not self.root.is_dir():
            msg = f"Dataset root '{self.root}' does not exist."
            raise DataLayoutError(msg)
        found = self.find_categories()
        if not found:
            msg = f"No category folders found under '{self.root}' for {type(self).__name__}."
            raise DataLayoutError(msg)
        if categories is None:
            return found
        if isinstance(categories, str):
            categories = [categories]
        if len(categories) == 0:
            msg = f"categories is empty: name at least one, or leave it unset for all of {found}."
            raise DataLayoutError(msg)
        unknown = sorted(set(categories) - set(found))
        if unknown:
            msg = f"Unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown} under '{self.root}'. Found: {found}."
            raise DataLayoutError(msg)
        return sorted(set(categories))

    def defect_mask_pairs(self, category: str) -> list[tuple[Path, Path]]:
        """``(defect image, mask)`` pairs of one category whose sizes must match (override per layout)."""
        del category
        return []

    def check_files(self, category: str) -> None:
        """Check every image file of one category and its masks' sizes before anything is trained.

        Raises:
            DataLayoutError: Naming every unreadable file and every mask of the wrong size.
        """
        folder = self.root / category
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        problems = unreadable_images_and_mask_sizes(files, self.defect_mask_pairs(category))
        _raise_problems(f"{category}: {{count}} bad image / mask files", problems)

    def _build_split(self, split: Split) -> MultiClassDataset:
        datasets: dict[str, AnomalibDataset] = {}
        for category in self.categories:
            self.check_category(category)
            try:
                dataset = self.make_category_dataset(category, split)
            except RuntimeError as error:
                if "Found 0 images" in str(error):
                    msg = f"Category '{category}' has no images under '{self.root / category}'."
                    raise DataLayoutError(msg) from error
                raise
            if split == Split.TRAIN and len(dataset) == 0:
                msg = (
                    f"Category '{category}' has no training images (expected normal ones under {self.root / category})."
                )
                raise DataLayoutError(msg)
            datasets[category] = dataset
        return MultiClassDataset.from_datasets(datasets, categories=self.categories)

    def _setup(self, _stage: str | None = None) -> None:
        for category in self.categories:
            self.check_files(category)
        self.train_data = self._build_split(Split.TRAIN)
        self.test_data = self._build_split(Split.TEST)

    def _create_val_split(self) -> None:
        """``from_train``: hold out ``val_split_ratio`` of EACH class's training images (at least one).

        anomalib's split samples the concatenated training set, which can leave a small class without any
        validation image -- and then without its own calibration.
        """
        if ValSplitMode(self.val_split_mode) != ValSplitMode.FROM_TRAIN:
            super()._create_val_split()
            return
        samples = self.train_data.samples
        generator = random.Random(self.seed if self.seed is not None else 0)
        held_out: list[int] = []
        for category in self.categories:
            indices = [int(i) for i in np.flatnonzero(samples.category.to_numpy() == category)]
            if len(indices) < 2:
                continue  # keep a lone image for training
            count = min(max(math.ceil(self.val_split_ratio * len(indices)), 1), len(indices) - 1)
            held_out += generator.sample(indices, count)
        kept = sorted(set(range(len(samples))) - set(held_out))
        self.val_data = self.train_data.subsample(sorted(held_out))
        self.train_data = self.train_data.subsample(kept)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets and attach the per-class evaluator to the trainer (first in the list)."""
        super().setup(stage)
        trainer = getattr(self, "trainer", None)
        if self.per_class_evaluation and trainer is not None and isinstance(stage, TrainerFn | str):
            from anomalib_pnpt.evaluation import PerClassEvaluation

            if not any(isinstance(callback, PerClassEvaluation) for callback in trainer.callbacks):
                # First position: anomalib's post-processor (a model callback) replaces the batch's scores
                # with clamped normalised ones in its own on_test_batch_end; we must read them before.
                trainer.callbacks.insert(0, PerClassEvaluation())


class MultiClassMVTecAD(MultiClassDataModule):
    """MVTec AD layout (``<root>/<category>/{train/good,test/<defect>,ground_truth/<defect>}``), many categories.

    Also reads every dataset resized to that layout (e.g. ``../shared/data/industrial``, MVTec AD 2's
    public splits after renaming, VisA after anomalib's conversion — see :class:`MultiClassVisa`).

    Example:
        >>> datamodule = MultiClassMVTecAD(root="../shared/data/industrial")  # doctest: +SKIP
        >>> datamodule.categories  # doctest: +SKIP
        ['bottle', 'hazelnut_toy', 'magnetic_tile']
    """

    def find_categories(self) -> list[str]:
        """Categories are the sub-folders that contain ``train/`` or ``test/``."""
        return sorted(p.name for p in self.root.iterdir() if (p / "train").is_dir() or (p / "test").is_dir())

    def check_category(self, category: str) -> None:
        """Check that defect images and masks pair up."""
        check_defect_masks(self.root / category, self.normal_test_dirs)

    def defect_mask_pairs(self, category: str) -> list[tuple[Path, Path]]:
        """``test/<defect>/<name>`` with ``ground_truth/<defect>/<name>_mask``."""
        test_dir, truth_dir = self.root / category / "test", self.root / category / "ground_truth"
        if not test_dir.is_dir():
            return []
        defects = _defect_dirs(test_dir, self.normal_test_dirs)
        return [pair for defect in defects for pair in image_mask_pairs(defect, truth_dir / defect.name)]

    def make_category_dataset(self, category: str, split: Split) -> AnomalibDataset:
        """Build anomalib's ``MVTecADDataset`` for one category."""
        return MVTecADDataset(root=self.root, category=category, split=split)


class MultiClassVisa(MultiClassMVTecAD):
    """VisA after anomalib's conversion to the MVTec layout (``visa_pytorch/<category>/...``).

    anomalib's ``Visa`` datamodule converts the original VisA release with its split CSV into
    ``<root>/visa_pytorch``; point ``root`` at that folder.
    """

    def make_category_dataset(self, category: str, split: Split) -> AnomalibDataset:
        """Build anomalib's ``VisaDataset`` for one category."""
        return VisaDataset(root=self.root, category=category, split=split)


class MultiClassBTAD(MultiClassMVTecAD):
    """BTAD / BTech layout (``<root>/<01|02|03>/{train/ok,test/ok,test/ko,ground_truth/ko}``)."""

    normal_test_dirs = ("ok",)

    def make_category_dataset(self, category: str, split: Split) -> AnomalibDataset:
        """Build anomalib's ``BTechDataset`` for one category."""
        return BTechDataset(root=self.root, category=category, split=split)


class MultiClassFolder(MultiClassDataModule):
    """Generic folders, one per category: ``<root>/<category>/{normal_dir,abnormal_dir,mask_dir}``.

    Args:
        root: Dataset root holding one folder per category.
        normal_dir: Normal images folder inside each category (split into train/test by
            ``test_split_ratio`` unless ``normal_test_dir`` is given).
        abnormal_dir: Defect images folder inside each category.
        mask_dir: Defect masks folder inside each category (optional).
        normal_test_dir: Optional separate folder of normal test images.
        **kwargs: See :class:`MultiClassDataModule`.

    Example:
        >>> datamodule = MultiClassFolder(root="data/parts", normal_dir="good", abnormal_dir="bad",
        ...                               mask_dir="masks")  # doctest: +SKIP
    """

    # Many arguments: anomalib's datamodule arguments, flat for its CLI, plus the multi-class ones.
    def __init__(  # noqa: PLR0913
        self,
        root: str | Path,
        normal_dir: str = "good",
        abnormal_dir: str | None = "defect",
        mask_dir: str | None = None,
        normal_test_dir: str | None = None,
        categories: Sequence[str] | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 4,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_TRAIN,
        val_split_ratio: float = 0.1,
        seed: int | None = None,
        per_class_evaluation: bool = True,
    ) -> None:
        self.normal_dir = normal_dir
        self.abnormal_dir = abnormal_dir
        self.mask_dir = mask_dir
        self.normal_test_dir = normal_test_dir
        super().__init__(
            root=root,
            categories=categories,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
            per_class_evaluation=per_class_evaluation,
        )

    def find_categories(self) -> list[str]:
        """Categories are the sub-folders that contain ``normal_dir``."""
        return sorted(p.name for p in self.root.iterdir() if (p / self.normal_dir).is_dir())

    def check_category(self, category: str) -> None:
        """Check that defect images and masks pair up (by file stem, ``_mask`` suffix allowed)."""
        if not (self.abnormal_dir and self.mask_dir):
            return
        problems = unpaired_images_and_masks(
            self.root / category / self.abnormal_dir, self.root / category / self.mask_dir
        )
        if problems:
            msg = f"{category}: unpaired defect images / masks:\n  " + "\n  ".join(problems)
            raise DataLayoutError(msg)

    def defect_mask_pairs(self, category: str) -> list[tuple[Path, Path]]:
        """``abnormal_dir/<name>`` with ``mask_dir/<name>`` (or ``<name>_mask``)."""
        if not (self.abnormal_dir and self.mask_dir):
            return []
        return image_mask_pairs(self.root / category / self.abnormal_dir, self.root / category / self.mask_dir)

    def make_category_dataset(self, category: str, split: Split) -> AnomalibDataset:
        """Build anomalib's ``FolderDataset`` for one category."""
        base = self.root / category
        return FolderDataset(
            name=category,
            root=base,
            normal_dir=self.normal_dir,
            abnormal_dir=self.abnormal_dir if self.abnormal_dir and (base / self.abnormal_dir).is_dir() else None,
            mask_dir=self.mask_dir if self.mask_dir and (base / self.mask_dir).is_dir() else None,
            normal_test_dir=self.normal_test_dir,
            split=split,
        )
