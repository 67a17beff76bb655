# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""INT8 post-training quantisation of the exported graph that keeps the anomaly signal in floating point.

Both models score an image by how far a reconstruction is from the backbone's features (cosine or squared
distance), then normalise that score with a narrow per-class range calibrated in FP32. anomalib's
``int8_ptq`` quantises every layer; the INT8 noise of the transformer and of the distance is larger than
the gap between normal and defective parts, and it shifts the raw scores out of the calibrated range
(measured on the industrial data: PNPT's scores all became 0, image AUROC 50 for every class -- see
``benchmarks/deployment.py``). Here only the part of the graph before the first matrix product is
quantised -- the frozen convolutional backbone, which holds most of the arithmetic -- and everything from
the prompt retrieval on (transformer, anomaly map, post-processing) stays as exported.

Example:
    >>> import openvino as ov
    >>> model = ov.Core().read_model("exported/weights/openvino/model.xml")  # doctest: +SKIP
    >>> batches = [np.random.rand(1, 3, 256, 256).astype(np.float32) for _ in range(8)]  # doctest: +SKIP
    >>> quantised = quantize_feature_extractor(model, batches)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import openvino as ov

logger = logging.getLogger(__name__)

# Operation types whose presence marks the start of the prompt / transformer part of the graph.
TRANSFORMER_START = frozenset({"MatMul", "ScaledDotProductAttention"})
# Operation types NNCF would put quantisers on (inputs or outputs); the ones downstream are kept out.
QUANTISABLE = frozenset(
    {
        "MatMul",
        "ScaledDotProductAttention",
        "Convolution",
        "GroupConvolution",
        "ConvolutionBackpropData",
        "Multiply",
        "Add",
        "Subtract",
        "Divide",
        "ReduceSum",
        "ReduceMean",
        "MVN",
        "Interpolate",
        "AvgPool",
        "MaxPool",
    }
)
RECOMMENDED_CALIBRATION_IMAGES = 300  # anomalib's own recommendation for its int8_ptq


def operations_after_feature_extractor(model: ov.Model) -> list[str]:
    """Names of the quantisable operations at or downstream of the first matrix product.

    The walk follows the graph's topological order: an operation is downstream when it is a matrix product
    or attention, or when any of its inputs is downstream.

    Args:
        model: An OpenVINO model (an exported PNPT / OneNIP graph).

    Returns:
        The friendly names to leave in floating point.
    """
    downstream: set[str] = set()
    kept: list[str] = []
    for operation in model.get_ordered_ops():
        name = operation.get_friendly_name()
        parents = (port.get_source_output().get_node().get_friendly_name() for port in operation.inputs())
        if operation.get_type_name() in TRANSFORMER_START or any(parent in downstream for parent in parents):
            downstream.add(name)
            if operation.get_type_name() in QUANTISABLE:
                kept.append(name)
    return kept


def quantize_feature_extractor(
    model: ov.Model,
    data: Iterable[Any],
    transform: Callable[[Any], Any] | None = None,
    subset_size: int = 300,
) -> ov.Model:
    """INT8 post-training quantisation of the backbone only (NNCF), calibrated on normal images.

    Args:
        model: The FP32 OpenVINO model.
        data: Re-iterable calibration items (NNCF reads them more than once): normal images, never the
            test set (anomalib passes the validation split).
        transform: Turns an item into the model's input, a ``(B, 3, H, W)`` array in ``[0, 1]``.
        subset_size: Most items NNCF uses.

    Returns:
        The quantised model.
    """
    import nncf

    ignored = nncf.IgnoredScope(names=operations_after_feature_extractor(model), validate=False)
    return nncf.quantize(model, nncf.Dataset(data, transform), subset_size=subset_size, ignored_scope=ignored)


def quantize_with_datamodule(model: ov.Model, datamodule: Any) -> ov.Model:
    """:func:`quantize_feature_extractor` fed like anomalib's ``int8_ptq``: the datamodule's validation images.

    Args:
        model: The FP32 OpenVINO model.
        datamodule: An anomalib datamodule; its validation split (normal training images held out by the
            multi-class datamodules) calibrates the quantisers.

    Raises:
        ValueError: Without a datamodule.
    """
    if datamodule is None:
        msg = "Datamodule must be provided for OpenVINO INT8_PTQ compression"
        raise ValueError(msg)
    datamodule.setup("fit")
    dataloader = datamodule.val_dataloader()
    if len(dataloader.dataset) < RECOMMENDED_CALIBRATION_IMAGES:
        logger.warning(
            "%d validation images calibrate INT8; >%d recommended",
            len(dataloader.dataset),
            RECOMMENDED_CALIBRATION_IMAGES,
        )
    return quantize_feature_extractor(model, dataloader, partial(_model_input, size=_static_size(model)))


def _static_size(model: ov.Model) -> tuple[int, int] | None:
    """The exported input's fixed ``(H, W)``, if any."""
    shape = model.input(0).partial_shape
    if shape.rank.is_static and shape[2].is_static and shape[3].is_static:
        return shape[2].get_length(), shape[3].get_length()
    return None


def _model_input(batch: Any, size: tuple[int, int] | None) -> Any:
    """A batch's images at the exported input size (the datamodule may load them at another size)."""
    images = batch.image
    if size is not None and tuple(images.shape[-2:]) != size:
        images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images.numpy()
