# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A dataset that concatenates anomalib's per-category datasets and tags every sample with its class.

The samples table of each category's stock anomalib dataset (MVTec AD, VisA, BTAD, Folder) gets two
columns, ``category`` and ``category_id``; the tables are concatenated in the order of the sorted
category list, so indices are stable across runs and machines. Items are returned as
:class:`~anomalib_pnpt.data.items.MultiClassImageItem`.

Images are read with :func:`read_rgb_image`, which — unlike anomalib's ``read_image`` — converts 16-bit
and float grayscale correctly (PIL's ``convert("RGB")`` clips them to white) and names the file when it
cannot be decoded.

Example:
    >>> from anomalib.data.datasets import MVTecADDataset
    >>> parts = {c: MVTecADDataset(root="../shared/data/industrial", category=c, split="test")
    ...          for c in ["bottle", "hazelnut_toy"]}  # doctest: +SKIP
    >>> dataset = MultiClassDataset.from_datasets(parts)  # doctest: +SKIP
    >>> dataset[0].category  # doctest: +SKIP
    'bottle'
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib import TaskType
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2.functional import to_dtype, to_image
from torchvision.tv_tensors import Mask

from anomalib_pnpt.data.items import MultiClassImageBatch, MultiClassImageItem


class ImageReadError(OSError):
    """Raised when an image or mask file cannot be decoded; the message names the file."""


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float image of any bit depth to uint8."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        # 16-bit PNG/TIFF: use the full range of the type, not the image's own min/max, so that a dark
        # image stays dark.
        return (array.astype(np.float64) / np.iinfo(array.dtype).max * 255.0).round().astype(np.uint8)
    array = array.astype(np.float64)
    if array.max() > 1.0:
        array = array / array.max()
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def load_rgb_array(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB whatever its mode (L, LA, P, RGBA, I;16, I, F, CMYK).

    Args:
        path: Image file.

    Returns:
        The RGB image.

    Raises:
        ImageReadError: If the file is missing, not an image or truncated.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
                gray = _to_uint8(np.asarray(image))
                return np.repeat(gray[..., None], 3, axis=-1)
            # Alpha (RGBA, LA, PA, transparent P) carries no appearance information for inspection: convert("RGB")
            # drops it, where compositing on black would change the colour of semi-transparent pixels.
            return np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        msg = f"Cannot read image '{path}': {error}"
        raise ImageReadError(msg) from error


def read_rgb_image(path: str | Path) -> torch.Tensor:
    """Read an image as a float tensor ``(3, H, W)`` in ``[0, 1]`` (see :func:`load_rgb_array`).

    Args:
        path: Image file.

    Returns:
        The image as a torchvision ``Image`` tensor.
    """
    return to_dtype(to_image(load_rgb_array(path)), torch.float32, scale=True)


def read_binary_mask(path: str | Path) -> Mask:
    """Read a ground-truth mask as a ``(H, W)`` uint8 tensor of 0/1 (any non-zero pixel is defective).

    Args:
        path: Mask file.

    Returns:
        The mask.

    Raises:
        ImageReadError: If the file cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        msg = f"Cannot read mask '{path}': {error}"
        raise ImageReadError(msg) from error
    if array.ndim == 3:
        array = array.max(axis=-1)
    return Mask(torch.from_numpy((array > 0).astype(np.uint8)))


class MultiClassDataset(AnomalibDataset):
    """Concatenation of per-category anomalib datasets whose items carry their class.

    Args:
        samples: Samples table with anomalib's columns plus ``category`` and ``category_id``.
        categories: All categories of the datamodule, sorted; ``category_id`` indexes this list.
        task: ``"segmentation"`` when any category has masks, else ``"classification"``.
        augmentations: Optional torchvision v2 transform applied to image and mask.

    Example:
        >>> import pandas as pd
        >>> samples = pd.DataFrame({"image_path": [], "label_index": [], "mask_path": [], "split": [],
        ...                         "category": [], "category_id": []})
        >>> len(MultiClassDataset(samples, categories=["a"], task="segmentation"))
        0
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        categories: list[str],
        task: TaskType | str = TaskType.SEGMENTATION,
        augmentations: Callable | None = None,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.categories = list(categories)
        samples = samples.reset_index(drop=True)
        samples.attrs["task"] = TaskType(task).value
        self.samples = samples

    @classmethod
    def from_datasets(
        cls, datasets: Mapping[str, AnomalibDataset], categories: list[str] | None = None
    ) -> MultiClassDataset:
        """Concatenate stock datasets, one per category, tagging their samples.

        Args:
            datasets: Category name -> that category's anomalib dataset (one split).
            categories: The full sorted category list (defaults to the sorted keys of ``datasets``).

        Returns:
            The combined dataset.
        """
        categories = sorted(datasets) if categories is None else list(categories)
        frames = []
        tasks = set()
        for name, dataset in datasets.items():
            frame = dataset.samples.copy()
            frame["category"] = name
            frame["category_id"] = categories.index(name)
            frames.append(frame)
            tasks.add(dataset.samples.attrs.get("task", "segmentation"))
        samples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        task = TaskType.SEGMENTATION if "segmentation" in tasks else TaskType.CLASSIFICATION
        return cls(samples, categories=categories, task=task)

    @property
    def name(self) -> str:
        """Name of the dataset (used by anomalib for output paths)."""
        return "multiclass"

    @property
    def category(self) -> str:
        """The categories joined with ``+`` (anomalib expects one string)."""
        return "+".join(self.categories)

    def __add__(self, other_dataset: AnomalibDataset) -> MultiClassDataset:
        """Concatenate with another multi-class dataset of the same category list."""
        if not isinstance(other_dataset, MultiClassDataset) or other_dataset.categories != self.categories:
            msg = "Only MultiClassDatasets with the same category list can be concatenated."
            raise TypeError(msg)
        dataset = copy.deepcopy(self)
        dataset.samples = pd.concat([self.samples, other_dataset.samples], ignore_index=True)
        dataset.samples.attrs["task"] = self.samples.attrs["task"]
        return dataset

    def __getitem__(self, index: int) -> MultiClassImageItem:
        """Return the item at ``index`` with its ``category`` and ``category_id``."""
        row = self.samples.iloc[index]
        image = read_rgb_image(row.image_path)
        label_index = int(row.label_index)
        gt_mask = None
        if self.task == TaskType.SEGMENTATION:
            if label_index == LabelName.NORMAL:
                gt_mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
            elif label_index == LabelName.ABNORMAL and isinstance(row.mask_path, str) and row.mask_path:
                gt_mask = read_binary_mask(row.mask_path)
                if gt_mask.shape != image.shape[-2:]:
                    msg = f"Mask '{row.mask_path}' is {tuple(gt_mask.shape)}, its image is {tuple(image.shape[-2:])}."
                    raise ValueError(msg)
        if self.augmentations is not None:
            if gt_mask is None:
                image = self.augmentations(image)
            else:
                image, gt_mask = self.augmentations(image, gt_mask)
        gt_label = None if label_index == LabelName.UNKNOWN else torch.tensor(label_index)
        return MultiClassImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=gt_label,
            image_path=row.image_path,
            mask_path=row.mask_path if isinstance(row.mask_path, str) else "",
            category=str(row.category),
            category_id=torch.tensor(int(row.category_id)),
        )

    @property
    def collate_fn(self) -> Callable:
        """Collate items into a :class:`MultiClassImageBatch`."""
        return MultiClassImageBatch.collate
