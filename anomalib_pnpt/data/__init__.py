# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Multi-class data: datamodules over many categories, class-carrying items, embedded demo data."""

from anomalib_pnpt.data.datamodules import (
    DataLayoutError,
    MultiClassBTAD,
    MultiClassDataModule,
    MultiClassFolder,
    MultiClassMVTecAD,
    MultiClassVisa,
)
from anomalib_pnpt.data.dataset import ImageReadError, MultiClassDataset
from anomalib_pnpt.data.demo import make_demo_dataset
from anomalib_pnpt.data.items import (
    MultiClassGraphOutputs,
    MultiClassImageBatch,
    MultiClassImageItem,
    MultiClassInferenceBatch,
    MultiClassNumpyImageBatch,
)

__all__ = [
    "DataLayoutError",
    "ImageReadError",
    "MultiClassBTAD",
    "MultiClassDataModule",
    "MultiClassDataset",
    "MultiClassFolder",
    "MultiClassGraphOutputs",
    "MultiClassImageBatch",
    "MultiClassImageItem",
    "MultiClassInferenceBatch",
    "MultiClassMVTecAD",
    "MultiClassNumpyImageBatch",
    "MultiClassVisa",
    "make_demo_dataset",
]
