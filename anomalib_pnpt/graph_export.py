# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib's exports of a prompt-pool model, with the retrieved class in the graph and the class names beside it.

A module mixes :class:`GraphExport` in before anomalib's ``AnomalibModule``; its ``forward`` returns
:class:`~anomalib_pnpt.data.items.MultiClassGraphOutputs` while :attr:`GraphExport.tracing_graph` is set, and it has
``prompt_categories``. Every export writes ``categories.json`` (what ``pred_category_id`` indexes) beside the model.

anomalib's ``INT8_PTQ`` quantises every layer, which drowns a reconstruction distance in INT8 noise; here it
quantises the backbone only (:mod:`~anomalib_pnpt.quantization`), on the exported FP32 graph, through the public
``to_openvino`` (anomalib offers no public hook for its quantisation step).

Example:
    >>> engine.export(model, export_type="openvino", export_root="exported")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anomalib.deploy import CompressionType

CATEGORIES_FILE = "categories.json"


class GraphExport:
    """anomalib's ``to_torch`` / ``to_onnx`` / ``to_openvino`` for a multi-class prompt-pool module."""

    tracing_graph: bool = False  # True only while ``to_onnx`` traces ``forward``
    prompt_categories: list[str]

    def to_torch(self, export_root: Path | str, *args: Any, **kwargs: Any) -> Path:
        """Export to a torch ``.pt`` as anomalib does, plus ``categories.json`` beside it."""
        path = super().to_torch(export_root, *args, **kwargs)  # type: ignore[misc]
        self.write_categories(path)
        return path

    def to_onnx(self, export_root: Path | str, *args: Any, **kwargs: Any) -> Path:
        """Export to ONNX as anomalib does, plus ``categories.json``.

        The graph is traced with three more outputs: the retrieved class ``pred_category_id``, its similarity
        ``pred_category_similarity`` and the unknown-class flag ``pred_unknown``. They are then removed from the
        graph's output list: the tensors stay (the calibration and the labels read them), and anomalib's stock
        ``OpenVINOInferencer``, which turns every output into a ``NumpyImageBatch`` field, sees anomalib's four.
        ``anomalib_pnpt.deploy.read_model`` lists them as outputs again. anomalib's ``to_openvino`` converts
        this ONNX file, so the OpenVINO export is the same graph.
        """
        import onnx

        from anomalib_pnpt.deploy import EXTRA_OUTPUTS, hide_onnx_output

        self.tracing_graph = True
        try:
            path = super().to_onnx(export_root, *args, **kwargs)  # type: ignore[misc]
        finally:
            self.tracing_graph = False
        outputs = {output.name for output in onnx.load(str(path)).graph.output}
        for name in EXTRA_OUTPUTS:
            if name in outputs:
                hide_onnx_output(path, name)
        self.write_categories(path)
        return path

    def to_openvino(self, export_root: Path | str, *args: Any, **kwargs: Any) -> Path:
        """Export to OpenVINO as anomalib does, plus ``categories.json``; ``INT8_PTQ`` quantises the backbone only.

        Args:
            export_root: Output folder.
            *args: anomalib's ``to_openvino`` arguments.
            **kwargs: anomalib's keyword arguments (``compression_type``, ``datamodule``, ...).

        Returns:
            The ``.xml`` file.
        """
        if kwargs.get("compression_type") != CompressionType.INT8_PTQ:
            path = super().to_openvino(export_root, *args, **kwargs)  # type: ignore[misc]
        else:
            import openvino as ov

            from anomalib_pnpt.quantization import quantize_with_datamodule

            path = Path(super().to_openvino(export_root, *args, **{**kwargs, "compression_type": None}))  # type: ignore[misc]
            quantized = quantize_with_datamodule(ov.Core().read_model(path), kwargs.get("datamodule"))
            # Written beside, then moved over: the FP32 weights file is memory-mapped while the model lives.
            staged = path.with_name(f"int8_{path.name}")
            ov.save_model(quantized, staged, compress_to_fp16=False)
            del quantized
            for suffix in (".xml", ".bin"):
                staged.with_suffix(suffix).replace(path.with_suffix(suffix))
        self.write_categories(path)
        return path

    def write_categories(self, model_path: Path) -> None:
        """``categories.json`` beside an exported model: the class names ``pred_category_id`` indexes."""
        (Path(model_path).parent / CATEGORIES_FILE).write_text(json.dumps(list(self.prompt_categories)))
