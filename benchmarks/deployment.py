# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Deployment benchmark: per-class calibration, export precision, CPU latency and size, in one run.

Usage:
    python benchmarks/deployment.py [--output benchmarks/results/deployment] [--pnpt-epochs 1]
        [--onenip-epochs 3] [--stages calibration,latency,size]

1. **Calibration** -- PNPT and OneNIP are trained (CPU configs, ``configs/*_cpu.yaml``) on
   ``$DATA/industrial`` with the multi-class datamodule's default split: 10 % of each class's normal
   training images held out for validation, where the per-class post-processor calibrates. On the test
   set: per-class image F1 and pixel F1 with each retrieved class's thresholds vs one global threshold
   (the same rule over all classes' held-out images). Then the models are exported to OpenVINO (FP32 IR,
   FP16 IR, INT8 post-training quantisation on the held-out normal images -- ours of the backbone only, and
   for comparison anomalib's own of every layer) and run on the whole test set:
   per-class image AUROC and pixel AP of each precision next to torch's, the retrieved class's agreement
   with torch and the largest score / map difference (FP32 with ``INFERENCE_PRECISION_HINT=f32``).
2. **Latency** -- ms per 256 px test image at batch 1 and 8, torch eager vs OpenVINO FP32 / FP16 / INT8,
   for PNPT, OneNIP and the unified PatchCore / PaDiM checkpoints of
   ``benchmarks/results/shipped_cpu`` (run that benchmark first), exported the same way, with
   model file sizes and the peak memory of a process that only loads the OpenVINO model and infers.
3. **Size against data** -- each model trained on 1, 2 and 3 classes with the same number of training
   images per class (``--images-per-class``), and on every training image of the three classes:
   exported OpenVINO size and peak memory of a process that loads the model and infers. PatchCore runs at
   anomalib's default coreset ratio 0.1 here (its memory bank is what grows); its bank keeps the coreset's
   row count but takes random rows, because the greedy selection over the full set's ~0.9 M patches would
   take many hours on 2 cores (size and memory depend only on the bank's shape).

Everything the run trains or exports stays under ``<output>/jobs`` (ignored by git); tables go to
``<output>/*.csv`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from anomalib.data import InferenceBatch
from anomalib.engine import Engine
from invocation import data_root
from lightning.pytorch import Callback
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.deploy import read_model
from anomalib_pnpt.evaluation import auroc, average_precision, f1_score
from anomalib_pnpt.model_factory import build_model, import_class
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule

REPO = Path(__file__).resolve().parents[1]
OURS = {
    "PNPT": REPO / "configs" / "pnpt_cpu.yaml",
    "PNPT-lineside": REPO / "configs" / "pnpt_cpu_lineside.yaml",  # M = 2 pairs: the latency-sized variant
    "OneNIP": REPO / "configs" / "onenip_cpu.yaml",
}
BASELINES = {  # name -> (class path, job folder under the baselines benchmark's jobs)
    "PatchCore": ("anomalib.models.Patchcore", "PatchCore_unified"),
    "PaDiM": ("anomalib.models.Padim", "PaDiM_unified"),
}
PRECISIONS = {  # name -> (anomalib compression type, OpenVINO compile config)
    "OV FP32": (None, {"INFERENCE_PRECISION_HINT": "f32"}),
    "OV FP32 IR, CPU default": (None, {}),
    "OV FP16": ("fp16", {}),
    "OV INT8 (PTQ)": ("int8_ptq", {}),
}
# Only in the precision table of our models: anomalib's own PTQ of every layer, which ours replace by a
# backbone-only PTQ (anomalib_pnpt/quantization.py); kept to show why.
ALL_LAYER_PTQ = {"OV INT8 (anomalib's all-layer PTQ)": ("int8_ptq_all_layers", {})}
# The probe reads VmHWM (this process image's peak RSS): getrusage's ru_maxrss would carry over the parent
# benchmark's peak, because Linux keeps the pre-exec high-water mark in the child's rusage.
MEMORY_PROBE = """
import sys, numpy as np, openvino as ov
core = ov.Core()
compiled = core.compile_model(core.read_model(sys.argv[1]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
shape = compiled.input(0).partial_shape
batch = shape[0].get_length() if shape[0].is_static else 1  # upstream PatchCore's export pins its batch
images = np.random.default_rng(0).random((batch, 3, 256, 256), dtype=np.float32)
for _ in range(5):
    compiled(images)
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)
"""


def model_arguments(config_file: Path, data_dir: Path) -> tuple[str, dict[str, Any]]:
    """Class path and init args of a CLI config; the DTD folder is looked up under the data directory."""
    model = yaml.safe_load(config_file.read_text())["model"]
    arguments = dict(model.get("init_args", {}))
    textures = data_dir / "dtd"
    for owner in (arguments, arguments.get("network", {}).get("init_args", {})):  # a NetworkWithMemory's network
        training = owner.get("training") or {}
        if training.get("texture_dir"):
            owner["training"] = {**training, "texture_dir": str(textures) if textures.is_dir() else None}
    return model["class_path"], arguments


def datamodule_for(root: Path, categories: list[str] | None = None) -> MultiClassMVTecAD:
    """The package's default split: 10 % of each class's normal training images held out for calibration."""
    datamodule = MultiClassMVTecAD(
        root=root,
        categories=categories,
        train_batch_size=8,
        eval_batch_size=8,
        num_workers=2,
        per_class_evaluation=False,
        seed=0,
    )
    datamodule.setup()
    return datamodule


def train(
    class_path: str,
    arguments: dict[str, Any],
    datamodule: MultiClassMVTecAD,
    epochs: int,
    folder: Path,
    **trainer_arguments: Any,
) -> tuple[torch.nn.Module, float]:
    """Fit (validation after the last epoch calibrates the post-processor); reuse a saved checkpoint."""
    checkpoint = folder / "model.ckpt"
    if checkpoint.is_file():
        return import_class(class_path).load_from_checkpoint(checkpoint, weights_only=False), float("nan")
    torch.manual_seed(0)
    model = build_model(class_path, arguments)
    engine = Engine(
        default_root_dir=folder,
        max_epochs=epochs,
        check_val_every_n_epoch=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        **trainer_arguments,
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    engine.trainer.save_checkpoint(checkpoint)
    return model, seconds


@torch.no_grad()
def torch_outputs(model: PromptedAnomalyModule, datamodule: MultiClassMVTecAD) -> dict[str, torch.Tensor]:
    """Raw predictions of the whole test set, with the ground truth.

    Raw maps stay at the model's resolution: the exported graph normalises there and the caller resizes the
    calibrated map to the mask (normalisation clamps, so the order matters at the clamp edges).
    """
    model.eval()
    rows: dict[str, list] = {key: [] for key in ("raw_score", "raw_map", "class_id", "label", "mask", "truth")}
    for batch in datamodule.test_dataloader():
        raw, class_ids, _ = model.model.predict(model.pre_processor(batch.image))
        rows["raw_score"].append(raw.pred_score.reshape(-1))
        rows["raw_map"].append(raw.anomaly_map.reshape(len(batch.gt_label), *raw.anomaly_map.shape[-2:]))
        rows["class_id"].append(class_ids)
        rows["label"].append(batch.gt_label.bool())
        rows["mask"].append(batch.gt_mask.reshape(len(batch.gt_label), *batch.gt_mask.shape[-2:]).bool())
        rows["truth"].append(batch.category_id)
    return {key: torch.cat(values) for key, values in rows.items()}


def _resize(maps: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    maps = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    maps = maps.reshape(maps.shape[0], 1, *maps.shape[-2:])
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return maps[:, 0]


def calibration_rows(
    name: str, model: PromptedAnomalyModule, out: dict, categories: list[str]
) -> tuple[list[dict], InferenceBatch]:
    """Per-class image / pixel F1 with per-class thresholds vs one global threshold (same post-processor).

    Returns the rows and the per-class calibrated test-set output with maps at mask size (the reference the
    exports are compared to). Maps are normalised at the model's resolution, as in the exported graph, then
    resized; masks threshold the resized map at the normalised pixel threshold.
    """
    post = model.post_processor
    # The comparison's global-threshold twin is a copy with the same statistics: the model's own stays as trained.
    global_post = copy.deepcopy(post)
    global_post.per_class = False
    results = {}
    for mode, processor in (("global", global_post), ("per_class", post)):  # per-class last: its output is returned
        calibrated = processor(InferenceBatch(pred_score=out["raw_score"], anomaly_map=out["raw_map"]), out["class_id"])
        maps = _resize(calibrated.anomaly_map, out["mask"].shape[-2:])
        results[mode] = (calibrated.pred_label.reshape(-1), maps > post.normalized_pixel_threshold)
        calibrated = InferenceBatch(pred_score=calibrated.pred_score, anomaly_map=maps)
    rows = []
    for index, category in enumerate(categories):
        chosen = out["truth"] == index
        row = {"model": name, "category": category, "test_images": int(chosen.sum())}
        for mode in ("per_class", "global"):
            labels, masks = results[mode]
            row[f"image_F1_{mode}"] = 100 * f1_score(labels[chosen], out["label"][chosen])
            row[f"pixel_F1_{mode}"] = 100 * f1_score(masks[chosen], out["mask"][chosen])
        statistics = post.class_statistics()
        row["image_threshold_class"] = float(statistics["image_threshold"][index])
        row["image_threshold_global"] = float(post.image_threshold)
        rows.append(row)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.startswith(("image_F1", "pixel_F1"))}
    rows.append({"model": name, "category": "mean", "test_images": sum(r["test_images"] for r in rows), **mean})
    return rows, calibrated


def export(model: torch.nn.Module, folder: Path, compression: str | None, datamodule: Any) -> Path:
    """Export to OpenVINO as anomalib does, at 256 x 256 input (batch dynamic); reused when already there."""
    target = folder / (compression or "fp32")
    existing = next(target.rglob("model.xml"), None) if target.is_dir() else None
    if existing is not None:
        return existing
    if compression == "int8_ptq_all_layers":
        import openvino as ov
        from anomalib.models import AnomalibModule

        fp32 = ov.Core().read_model(str(export(model, folder, None, datamodule)))
        target.mkdir(parents=True, exist_ok=True)
        ov.save_model(AnomalibModule._post_training_quantization_ov(fp32, datamodule), target / "model.xml")
        return target / "model.xml"
    return Engine(default_root_dir=target).export(
        model,
        export_type="openvino",
        export_root=target,
        input_size=(256, 256),
        compression_type=compression,
        datamodule=datamodule if compression == "int8_ptq" else None,
    )


def openvino_model(path: Path, config: dict[str, str]) -> Any:
    """A compiled OpenVINO model on the CPU."""
    import openvino as ov

    core = ov.Core()
    return core.compile_model(read_model(path, core), "CPU", config)


def openvino_outputs(compiled: Any, datamodule: MultiClassMVTecAD) -> dict[str, torch.Tensor]:
    """Calibrated outputs of an exported model over the test set (maps at mask size)."""
    rows: dict[str, list] = {"score": [], "map": [], "class_id": []}
    for batch in datamodule.test_dataloader():
        outputs = {key.get_any_name(): value for key, value in compiled(batch.image.numpy()).items()}
        rows["score"].append(torch.as_tensor(outputs["pred_score"]).reshape(-1))
        rows["map"].append(_resize(outputs["anomaly_map"], batch.gt_mask.shape[-2:]))
        if "pred_category_id" in outputs:
            rows["class_id"].append(torch.as_tensor(outputs["pred_category_id"]).reshape(-1))
    return {key: torch.cat(values) for key, values in rows.items() if values}


def precision_rows(
    name: str,
    runtime: str,
    scores: torch.Tensor,
    maps: torch.Tensor,
    out: dict,
    categories: list[str],
    reference: dict | None = None,
) -> list[dict]:
    """Per-class image AUROC / pixel AP of calibrated outputs, and agreement with torch's."""
    rows = []
    for index, category in enumerate(categories):
        chosen = out["truth"] == index
        rows.append(
            {
                "model": name,
                "runtime": runtime,
                "category": category,
                "image_AUROC": 100 * auroc(scores[chosen], out["label"][chosen]),
                "pixel_AP": 100 * average_precision(maps[chosen], out["mask"][chosen]),
            }
        )
    rows.append(
        {"model": name, "runtime": runtime, "category": "mean"}
        | {key: float(np.mean([r[key] for r in rows])) for key in ("image_AUROC", "pixel_AP")}
    )
    if reference is not None:
        for row in rows:
            row["class_agreement"] = float((reference["class_id"] == out["class_id"]).float().mean())
            row["max_score_diff"] = float((reference["score"] - scores).abs().max())
            row["max_map_diff"] = float((reference["map"] - maps).abs().max())
    return rows


def model_megabytes(path: Path) -> float:
    """Size of an OpenVINO IR (``.xml`` + ``.bin``) in MB."""
    return sum(p.stat().st_size for p in (path, path.with_suffix(".bin"))) / 2**20


def peak_inference_mb(path: Path) -> float:
    """Peak resident memory of a fresh process that loads the OpenVINO model and infers 5 images."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        print(f"memory probe failed for {path}: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


COMPILE_PROBE = """
import json, sys, numpy as np, openvino as ov
core = ov.Core()
compiled = core.compile_model(core.read_model(sys.argv[1]), "CPU", json.loads(sys.argv[2]))
shape = compiled.input(0).partial_shape
compiled(np.zeros((shape[0].get_length() if shape[0].is_static else 1, 3, 256, 256), dtype=np.float32))
"""


def compile_failure(path: Path, config: dict[str, str]) -> str:
    """Why the model cannot be compiled and run once on the CPU ('' when it can), probed in a child process."""
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_PROBE, str(path), json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode == 0:
        return ""
    last = (result.stderr.strip().splitlines() or ["?"])[-1]
    return f"OpenVINO CPU compile/run failed (exit {result.returncode}): {last[:120]}"


@torch.no_grad()
def milliseconds_per_image(run: Any, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Mean wall time per image of ``run(batch)`` after two warm-up calls."""
    batch = images[:batch_size]
    for _ in range(2):
        run(batch)
    start = time.perf_counter()
    for _ in range(repeats):
        run(batch)
    return 1000 * (time.perf_counter() - start) / (repeats * batch_size)


def latency_rows(name: str, model: torch.nn.Module, exports: dict[str, Path], images: torch.Tensor) -> list[dict]:
    """Torch eager and every OpenVINO precision at batch 1 and 8."""
    model.eval()
    rows = [
        {
            "model": name,
            "runtime": "torch eager FP32",
            "ms_batch1": milliseconds_per_image(model, images, 1, 16),
            "ms_batch8": milliseconds_per_image(model, images, 8, 4),
            "size_mb": sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20,
        }
    ]
    for runtime, path in exports.items():
        row = {"model": name, "runtime": runtime, "size_mb": model_megabytes(path)}
        failure = compile_failure(path, PRECISIONS[runtime][1])
        if failure:  # e.g. anomalib's stock INT8 PaDiM crashes OpenVINO's CPU compiler: record, do not die
            rows.append(row | {"note": failure})
            continue
        compiled = openvino_model(path, PRECISIONS[runtime][1])
        batch_dim = compiled.input(0).partial_shape[0]
        if batch_dim.is_static:  # upstream PatchCore's export pins its batch: time that batch instead
            pinned = batch_dim.get_length()
            row["note"] = f"graph pins batch {pinned}: both columns are ms/image at batch {pinned}"
            row["ms_batch1"] = row["ms_batch8"] = milliseconds_per_image(
                lambda b, c=compiled: c(b.numpy()), images, pinned, 16 // pinned
            )
        else:
            row["ms_batch1"] = milliseconds_per_image(lambda b, c=compiled: c(b.numpy()), images, 1, 16)
            row["ms_batch8"] = milliseconds_per_image(lambda b, c=compiled: c(b.numpy()), images, 8, 4)
        if runtime == "OV FP32":
            row["peak_inference_mb"] = peak_inference_mb(path)
        rows.append(row)
    return rows


def stage_calibration_and_latency(args: argparse.Namespace, jobs: Path, stages: set[str]) -> dict[str, pd.DataFrame]:
    """Stages 1 and 2 (they share the trained models and their exports)."""
    root = args.data / "industrial"
    datamodule = datamodule_for(root)
    categories = datamodule.categories
    images = next(iter(datamodule.test_dataloader())).image  # 8 real 256 px test images
    tables: dict[str, list] = {"calibration": [], "precision": [], "latency": [], "training": []}
    for name, config_file in OURS.items():
        if name not in args.models:
            continue
        class_path, arguments = model_arguments(config_file, args.data)
        epochs = args.pnpt_epochs if name.startswith("PNPT") else args.onenip_epochs
        model, fit_seconds = train(class_path, arguments, datamodule, epochs, jobs / name)
        if not np.isnan(fit_seconds):  # trained in this run (not loaded from its checkpoint)
            tables["training"].append({"model": name, "epochs": epochs, "fit_s": fit_seconds})
        print(f"{name}: trained ({fit_seconds:.0f} s)", flush=True)
        exports = {
            runtime: export(model, jobs / name / "export", compression, datamodule)
            for runtime, (compression, _) in PRECISIONS.items()
        }
        if "calibration" in stages:
            out = torch_outputs(model, datamodule)
            rows, calibrated = calibration_rows(name, model, out, categories)
            tables["calibration"] += rows
            reference = {"score": calibrated.pred_score, "map": calibrated.anomaly_map, "class_id": out["class_id"]}
            tables["precision"] += precision_rows(
                name, "torch eager FP32", calibrated.pred_score, calibrated.anomaly_map, out, categories
            )
            del calibrated
            compared = exports | {
                runtime: export(model, jobs / name / "export", compression, datamodule)
                for runtime, (compression, _) in ALL_LAYER_PTQ.items()
            }
            for runtime, path in compared.items():
                got = openvino_outputs(openvino_model(path, (PRECISIONS | ALL_LAYER_PTQ)[runtime][1]), datamodule)
                tables["precision"] += precision_rows(
                    name, runtime, got["score"], got["map"], out | {"class_id": got["class_id"]}, categories, reference
                )
                print(f"{name}: {runtime} evaluated", flush=True)
            del out, reference
        if "latency" in stages:
            tables["latency"] += latency_rows(name, model, exports, images)
    if "latency" in stages:
        for name, (class_path, job) in BASELINES.items():
            if name not in args.models:
                continue
            folder = args.baselines / job
            checkpoint = next(folder.rglob("model.ckpt"), None)
            if checkpoint is None:
                print(f"{name}: no checkpoint under {folder} (run the baselines benchmark first); skipped")
                continue
            model = import_class(class_path).load_from_checkpoint(checkpoint, weights_only=False)
            exports = {}
            for runtime, (compression, _) in PRECISIONS.items():
                try:
                    exports[runtime] = export(model, jobs / name / "export", compression, datamodule)
                except Exception as error:  # record why a precision is unavailable instead of stopping
                    tables["latency"].append({"model": name, "runtime": runtime, "note": repr(error)[:160]})
            tables["latency"] += latency_rows(name, model, exports, images)
            print(f"{name}: latency measured", flush=True)
    return {key: pd.DataFrame(rows) for key, rows in tables.items() if rows}


def capped_root(source: Path, categories: list[str], images_per_class: int, target: Path) -> Path:
    """A copy of ``source`` with only the first ``images_per_class`` training images per class.

    Files are copied, not linked: anomalib's scan drops files that resolve outside the dataset root.
    """
    if target.exists():
        shutil.rmtree(target)
    for category in categories:
        train = target / category / "train" / "good"
        train.mkdir(parents=True)
        for image in sorted((source / category / "train" / "good").iterdir())[:images_per_class]:
            shutil.copyfile(image, train / image.name)
        for folder in ("test", "ground_truth"):
            shutil.copytree(source / category / folder, target / category / folder)
    return target


def stage_size(args: argparse.Namespace, jobs: Path) -> pd.DataFrame:
    """Exported size and peak inference memory against the number of training images (1, 2, 3 classes)."""
    all_categories = ["bottle", "hazelnut_toy", "magnetic_tile"]
    # Size against data is about what grows with the training set (the pool); PNPT-lineside has the same pool.
    models = {name: model_arguments(OURS[name], args.data) for name in ("PNPT", "OneNIP")}
    models["PatchCore (coreset 0.1)"] = (
        "anomalib.models.Patchcore",
        {
            "backbone": "tf_efficientnet_lite2",
            "layers": ["blocks.2", "blocks.4"],
            "pre_trained": False,
            "coreset_sampling_ratio": 0.1,
        },
    )
    rows = []
    for count in (1, 2, 3, "full"):
        if count == "full":  # every training image of the three classes (the full-set comparison)
            datamodule, classes = datamodule_for(args.data / "industrial"), 3
        else:
            root = args.data / "industrial"
            datamodule = datamodule_for(
                capped_root(root, all_categories[:count], args.images_per_class, jobs / "size" / f"data_{count}")
            )
            classes = count
        for name, (class_path, arguments) in models.items():
            folder = jobs / "size" / f"{name.split()[0]}_{count}"
            # The size of our models does not depend on training: two steps after the pool is built suffice.
            # PatchCore sees every training image: its memory bank is built from all of them.
            row = {"model": name, "classes": classes, "training_images": len(datamodule.train_data)}
            if name.startswith("PatchCore"):
                # Exported size and inference memory depend only on the bank's shape: keep the coreset's row
                # count (int(n * ratio), as KCenterGreedy) but pick the rows at random. The greedy selection
                # would take many hours over the full set on 2 cores, and on 18 bottle images here it grew to
                # 23 GB and was killed (anomalib 2.7, pretrained Lite2, ratio 0.1).
                row["note"] = "coreset-sized bank, rows picked at random"
                model, _ = train(class_path, arguments, datamodule, 1, folder, callbacks=[RandomCoresetRows()])
            else:
                model, _ = train(class_path, arguments, datamodule, 1, folder, limit_train_batches=2)
            path = export(model, folder / "export", None, datamodule)
            row |= {
                "openvino_mb": model_megabytes(path),
                "peak_inference_mb": peak_inference_mb(path),
            }
            rows.append(row)
            print(f"size: {name} x {count} classes: {row['openvino_mb']:.1f} MB", flush=True)
    return pd.DataFrame(rows)


class RandomCoresetRows(Callback):
    """Replace PatchCore's greedy coreset by random rows of the same count (size measurement only)."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Swap the torch model's subsampling before any embedding is stored."""
        torch_model = pl_module.model

        def subsample(sampling_ratio: float, embeddings: torch.Tensor | None = None) -> None:
            bank = torch.vstack(torch_model.embedding_store)
            torch_model.embedding_store.clear()
            rows = torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[
                : int(len(bank) * sampling_ratio)
            ]
            torch_model.memory_bank = bank[rows].clone()

        torch_model.subsample_embedding = subsample


def main() -> None:
    """Run the stages and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "deployment")
    default_data = data_root(__file__)
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--pnpt-epochs", type=int, default=1)
    parser.add_argument("--onenip-epochs", type=int, default=3)
    parser.add_argument("--images-per-class", type=int, default=20)
    parser.add_argument("--stages", default="calibration,latency,size")
    parser.add_argument(
        "--baselines",
        type=Path,
        default=REPO / "benchmarks" / "results" / "shipped_cpu" / "jobs",
        help="jobs folder of the baselines benchmark (its unified PatchCore / PaDiM checkpoints)",
    )
    parser.add_argument(
        "--models",
        type=lambda text: text.split(","),
        default=[*OURS, *BASELINES],
        help="models of the calibration / latency stages; a partial run replaces only their rows in the tables",
    )
    args = parser.parse_args()
    if not (args.data / "industrial").is_dir():
        print(f"SKIPPED: {args.data / 'industrial'} not found (set ANOMALIB_PNPT_DATA or --data).")
        return
    stages = set(args.stages.split(","))
    jobs = args.output / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    tables: dict[str, pd.DataFrame] = {}
    if stages & {"calibration", "latency"}:
        tables |= stage_calibration_and_latency(args, jobs, stages)
    if "size" in stages:
        tables["size"] = stage_size(args, jobs)
    write_report(args.output, tables, "python benchmarks/deployment.py " + " ".join(sys.argv[1:]))


def write_report(output: Path, tables: dict[str, pd.DataFrame], command: str) -> None:
    """Write this run's tables as CSV and rebuild ``results.md`` from every table in the folder."""
    import openvino as ov

    commands_file = output / "commands.json"
    commands = json.loads(commands_file.read_text()) if commands_file.is_file() else {}
    for key, table in tables.items():
        path = output / f"{key}.csv"
        kept = pd.DataFrame()
        if path.is_file() and "model" in table and key != "size":  # a partial run keeps the other models' rows
            kept = pd.read_csv(path)
            kept = kept[~kept["model"].isin(table["model"].unique())]
        pd.concat([kept, table], ignore_index=True).to_csv(path, index=False)
        commands[key] = f"{commands.get(key, '?')}; then {command.strip()}" if len(kept) else command.strip()
    commands_file.write_text(json.dumps(commands, indent=2))
    core = ov.Core()
    lines = [
        "# Deployment benchmark",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({core.get_property('CPU', 'FULL_DEVICE_NAME')}), OpenVINO "
        f"{ov.__version__}, torch {torch.__version__}; the OpenVINO CPU plugin's default inference precision "
        f"here is {core.get_property('CPU', 'INFERENCE_PRECISION_HINT')} (the 'CPU default' rows).",
    ]
    for key in ("training", "calibration", "precision", "latency", "size"):
        if (output / f"{key}.csv").is_file():
            table = pd.read_csv(output / f"{key}.csv")
            lines += ["", f"## {key}", "", f"Command: `{commands.get(key, '?')}`", ""]
            lines.append(table.to_markdown(index=False, floatfmt=".4g"))
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
