# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

r"""Line-side inference of an exported model: OpenVINO on a raw image file, no class label, no training stack.

The exported graphs of :class:`~anomalib_pnpt.Pnpt` and :class:`~anomalib_pnpt.OneNip` have one input (a
``[0, 1]`` image batch) and anomalib's four outputs, ``pred_score``, ``pred_label``, ``anomaly_map`` and
``pred_mask``, already normalised and thresholded with the retrieved class's calibration. So anomalib's
stock :class:`~anomalib.deploy.OpenVINOInferencer` and ``TorchInferencer`` run them as they run PatchCore.
The class retrieved from the prompt pool is a tensor of the graph named ``pred_category_id`` that is not
listed as an output (the stock inferencer turns every output into a ``NumpyImageBatch`` field, and that
batch has none for it). :func:`read_model` lists it again; :class:`MultiClassOpenVINOInferencer` is anomalib's
inferencer on such a model, returning a :class:`~anomalib_pnpt.data.items.MultiClassNumpyImageBatch` with
the class index and name (from the ``categories.json`` written beside the exported model). It also runs
stock anomalib exports (PatchCore, PaDiM), which have no class.

Command line (prints the prediction as JSON and writes the overlay picture)::

    python -m anomalib_pnpt.deploy --model results/export/weights/openvino/model.xml \
        --image bottle/test/broken_large/000.png --output overlay.png

Example:
    >>> inferencer = MultiClassOpenVINOInferencer("weights/openvino/model.xml")  # doctest: +SKIP
    >>> prediction = inferencer.predict("bottle/test/broken_large/000.png")  # doctest: +SKIP
    >>> prediction.pred_category, prediction.pred_score, prediction.pred_label  # doctest: +SKIP
    (['bottle'], array([0.93], dtype=float32), array([ True]))
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.deploy import OpenVINOInferencer
from anomalib.visualization.image.functional import (
    overlay_image,
    visualize_anomaly_map,
    visualize_pred_mask,
)
from PIL import Image

from anomalib_pnpt.captions import add_caption, caption_text
from anomalib_pnpt.data.dataset import ImageReadError, load_rgb_array
from anomalib_pnpt.data.items import MultiClassNumpyImageBatch
from anomalib_pnpt.graph_export import CATEGORIES_FILE


def read_categories(model_path: str | Path) -> list[str]:
    """Class names written beside an exported model (``categories.json``); empty when there is none."""
    path = Path(model_path).parent / CATEGORIES_FILE
    return list(json.loads(path.read_text())) if path.is_file() else []


CLASS_OUTPUT = "pred_category_id"
# Graph outputs beyond anomalib's four, hidden from its stock inferencers and listed again by ``read_model``.
EXTRA_OUTPUTS = (CLASS_OUTPUT, "pred_category_similarity", "pred_unknown")


def hide_onnx_output(path: str | Path, name: str) -> None:
    """Remove ``name`` from an ONNX file's graph outputs; the tensor and the nodes computing it stay.

    Only for a tensor that another node of the graph reads (the retrieved class feeds the per-class
    calibration), so that converters keep it and :func:`read_model` can list it again.

    Args:
        path: ONNX file, rewritten in place.
        name: Output to hide.

    Raises:
        ValueError: If no node reads the tensor (hiding it would let converters drop it).
    """
    import onnx

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    if not any(name in node.input for node in graph.node):
        msg = f"No node of {path} reads '{name}': hiding it from the outputs would lose it."
        raise ValueError(msg)
    kept = [output for output in graph.output if output.name != name]
    del graph.output[:]
    graph.output.extend(kept)
    onnx.save(graph_model, str(path))


def read_model(path: str | Path, core: Any = None) -> Any:
    """An exported ``.xml`` / ``.onnx`` model as an OpenVINO ``Model`` whose outputs include the retrieved class.

    Args:
        path: Exported model.
        core: OpenVINO ``Core`` to read with (default: a new one).

    Returns:
        The model, with ``pred_category_id`` as an output when the graph has that tensor (our models' exports;
        stock anomalib exports have none and come back unchanged).

    Example:
        >>> model = read_model("weights/openvino/model.xml")  # doctest: +SKIP
        >>> [output.get_any_name() for output in model.outputs]  # doctest: +SKIP
        ['pred_score', 'pred_label', 'anomaly_map', 'pred_mask', 'pred_category_id']
    """
    import openvino as ov

    model = (core or ov.Core()).read_model(str(path))
    listed = {name for output in model.outputs for name in output.get_names()}
    for name in EXTRA_OUTPUTS:
        if name not in listed:
            with contextlib.suppress(RuntimeError):  # no such tensor: a stock anomalib export (or an older one)
                model.add_outputs([name])
    return model


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image_file(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` float32 RGB in ``[0, 1]``, read as the training data is.

    anomalib's ``read_image`` turns a 16-bit grayscale PNG white (a defective part then scores 0 and passes);
    this reads every bit depth and mode the training reader reads.

    Args:
        path: Image file.

    Returns:
        The image.

    Raises:
        ImageReadError: If the file is missing, not an image or truncated (the message names the file).
    """
    return load_rgb_array(path).astype(np.float32) / 255.0


def image_files(path: str | Path) -> list[Path]:
    """The image files to predict: ``path`` itself, or the images directly inside a folder (sorted by name).

    Every file is decoded once here, so that a missing, truncated or non-image file is reported before the
    model is loaded.

    Args:
        path: An image file or a folder.

    Returns:
        The files.

    Raises:
        ImageReadError: If a file cannot be read, or a folder holds no image.
    """
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        msg = f"No image files ({', '.join(IMAGE_SUFFIXES)}) in folder '{path}'."
        raise ImageReadError(msg)
    for file in files:
        load_rgb_array(file)
    return files


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(H, W, C)`` float image to ``size`` (H, W), antialiased like the pre-processor."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()


class MultiClassOpenVINOInferencer(OpenVINOInferencer):
    """anomalib's OpenVINO inferencer for graphs that also output the retrieved class.

    Args:
        path: Exported ``model.xml`` (or ``.onnx``).
        device: OpenVINO device (``"CPU"``, ``"AUTO"``, ...).
        config: OpenVINO compile options (e.g. ``{"INFERENCE_PRECISION_HINT": "f32"}``).
        categories: Class names; default: ``categories.json`` beside the model.

    Example:
        >>> inferencer = MultiClassOpenVINOInferencer("model.xml", device="CPU")  # doctest: +SKIP
        >>> inferencer.predict(np.random.rand(256, 256, 3)).pred_category_id  # doctest: +SKIP
        array([1])
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        config: dict[str, Any] | None = None,
        categories: Sequence[str] | None = None,
    ) -> None:
        super().__init__(path=path, device=device, config=config)
        self.categories = list(categories) if categories is not None else read_categories(path)

    def load_model(self, path: str | Path | tuple[bytes, bytes]) -> tuple[Any, Any, Any]:
        """Load as anomalib does, with the retrieved class listed as an output (:func:`read_model`).

        Args:
            path: Exported ``.xml`` (its ``.bin`` beside it) or ``.onnx`` file.

        Returns:
            Input port, first output port and the compiled model, as anomalib's inferencer expects.
        """
        import openvino as ov

        if isinstance(path, tuple) or Path(path).suffix not in {".xml", ".onnx"}:
            return super().load_model(path)
        core = ov.Core()
        compiled = core.compile_model(read_model(path, core), device_name=self.device, config=self.config)
        return compiled.input(0), compiled.output(0), compiled

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(H, W)`` fixed in the graph, or ``None`` when the graph takes any size."""
        shape = self.input_blob.partial_shape
        if shape[2].is_static and shape[3].is_static:
            return int(shape[2].get_length()), int(shape[3].get_length())
        return None

    @staticmethod
    def _named_outputs(predictions: Any) -> dict[str, np.ndarray]:
        """Outputs by name; a re-listed hidden tensor's own name wins over the graph's internal ones.

        A hidden output listed again may carry several names (e.g. ``view_42`` and ``pred_category_similarity``);
        anomalib's ``post_process`` would take the first.
        """
        named = {}
        for names, value in zip(predictions.names(), predictions.to_tuple(), strict=True):
            ours = [name for name in names if name in EXTRA_OUTPUTS]
            named[ours[0] if ours else next(iter(names))] = value
        return named

    def predict(self, image: str | Path | np.ndarray | Image.Image | torch.Tensor) -> MultiClassNumpyImageBatch:
        """Score one image (a file path or an ``(H, W, 3)`` array) or a batch.

        A single image of another size than a fixed-size graph's input is resized to it first.

        Args:
            image: Image path, PIL image, ``(H, W, 3)`` / ``(B, 3, H, W)`` array or tensor.

        Returns:
            Score, label, anomaly map, mask and -- for prompt-pool models -- retrieved class index and name.
        """
        image_path = None
        if isinstance(image, str | Path):
            image_path = [str(image)]
            image = read_image_file(image)
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB")) / 255.0
        elif isinstance(image, torch.Tensor):
            image = image.cpu().numpy()
        size = self.input_size
        if size is not None and image.ndim == 3 and image.shape[-1] == 3 and tuple(image.shape[:2]) != size:
            image = _resize(image.astype(np.float32), size)
        image = self.pre_process(image)
        outputs = self._named_outputs(self.model({self.input_blob.any_name: image}))
        class_ids = outputs.pop(CLASS_OUTPUT, None)
        similarity, unknown = outputs.pop("pred_category_similarity", None), outputs.pop("pred_unknown", None)
        names = None
        if class_ids is not None and self.categories:
            names = [self.categories[int(index)] for index in np.asarray(class_ids).reshape(-1)]
        return MultiClassNumpyImageBatch(
            image=image,
            image_path=image_path,
            pred_category_id=class_ids,
            pred_category=names,
            pred_category_similarity=similarity,
            pred_unknown=unknown,
            **outputs,
        )


def overlay_picture(original: np.ndarray, prediction: MultiClassNumpyImageBatch, index: int = 0) -> Image.Image:
    """The original image with the anomaly heat map, the predicted mask's contour and a caption.

    Args:
        original: ``(H, W, 3)`` image in ``[0, 1]`` (any size: the map is resized to it).
        prediction: Output of :meth:`MultiClassOpenVINOInferencer.predict`.
        index: Which image of the batch.

    Returns:
        The overlay as a PIL image.
    """
    base = Image.fromarray((np.clip(original, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    result = base
    if prediction.anomaly_map is not None:
        anomaly_map = np.asarray(prediction.anomaly_map[index], dtype=np.float32).squeeze()
        heat = visualize_anomaly_map(Image.fromarray((np.clip(anomaly_map, 0, 1) * 255).astype(np.uint8)))
        result = overlay_image(result, heat.resize(base.size), alpha=0.4)
    if prediction.pred_mask is not None:
        mask = np.asarray(prediction.pred_mask[index]).squeeze().astype(np.uint8) * 255
        contour = visualize_pred_mask(Image.fromarray(mask).resize(base.size), mode="contour")
        result = overlay_image(result, contour, alpha=1.0)
    text = caption_text(
        prediction.pred_category[index] if prediction.pred_category is not None else None,
        float(np.asarray(prediction.pred_score).reshape(-1)[index]) if prediction.pred_score is not None else None,
        bool(np.asarray(prediction.pred_label).reshape(-1)[index]) if prediction.pred_label is not None else None,
        bool(np.asarray(prediction.pred_unknown).reshape(-1)[index]) if prediction.pred_unknown is not None else False,
    )
    return add_caption(result, text)


def prediction_summary(prediction: MultiClassNumpyImageBatch, index: int = 0) -> dict[str, Any]:
    """Plain-data summary of one image's prediction (what the command line prints)."""
    summary: dict[str, Any] = {}
    if prediction.image_path:
        summary["image"] = prediction.image_path[index]
    if prediction.pred_category is not None:
        summary["class"] = prediction.pred_category[index]
    if prediction.pred_category_id is not None:
        summary["class_id"] = int(np.asarray(prediction.pred_category_id).reshape(-1)[index])
    if prediction.pred_category_similarity is not None:
        summary["class_similarity"] = float(np.asarray(prediction.pred_category_similarity).reshape(-1)[index])
    if prediction.pred_unknown is not None:
        summary["unknown_class"] = bool(np.asarray(prediction.pred_unknown).reshape(-1)[index])
    if prediction.pred_score is not None:
        summary["score"] = float(np.asarray(prediction.pred_score).reshape(-1)[index])
    if prediction.pred_label is not None:
        summary["anomalous"] = bool(np.asarray(prediction.pred_label).reshape(-1)[index])
    if prediction.pred_mask is not None:
        summary["defect_area_fraction"] = float(np.asarray(prediction.pred_mask[index]).mean())
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Predict one image with an exported OpenVINO / ONNX model; print JSON and optionally write the overlay."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="exported model.xml or model.onnx")
    parser.add_argument("--image", type=Path, required=True, help="an image file, or a folder of images")
    parser.add_argument("--output", type=Path, help="overlay picture to write (PNG; for a folder: a folder)")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--precision", default=None, help="OpenVINO INFERENCE_PRECISION_HINT, e.g. f32")
    args = parser.parse_args(argv)
    config = {"INFERENCE_PRECISION_HINT": args.precision} if args.precision else None
    # Check the inputs before the model is loaded (seconds), so a wrong path fails at once and in one line.
    if not args.model.is_file():
        parser.error(f"model file '{args.model}' not found")
    try:
        files = image_files(args.image)
    except (ImageReadError, OSError) as error:
        parser.error(str(error))
    inferencer = MultiClassOpenVINOInferencer(args.model, device=args.device, config=config)
    folder = args.image.is_dir()
    for file in files:
        prediction = inferencer.predict(file)
        summary = prediction_summary(prediction)
        if args.output is not None:
            target = args.output / f"{file.stem}_overlay.png" if folder else args.output
            target.parent.mkdir(parents=True, exist_ok=True)
            overlay_picture(read_image_file(file), prediction).save(target)
            summary["overlay"] = str(target)
        # A folder gives one JSON line per image; a single image the indented object.
        print(json.dumps(summary) if folder else json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
