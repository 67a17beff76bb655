# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A short ``Engine.fit`` (or ``Engine.test``) of a small model on CPU, single process or two-process DDP (gloo).

Run as a script because Lightning's DDP launcher starts the other rank by re-running the command line::

    python tests/ddp_training.py Pnpt DEMO_ROOT OUT_DIR --devices 2
    python tests/ddp_training.py Pnpt DEMO_ROOT OUT_DIR --devices 2 --test-checkpoint OUT_DIR/model.ckpt

After a fit every rank writes ``OUT_DIR/rank<R>_of<DEVICES>.pt``: the model's prompt pool (for OneNIP also its
training prompt bank) and its per-class calibration; a single-process fit also saves ``OUT_DIR/model.ckpt``.
After a test of a checkpoint every rank writes ``OUT_DIR/test_rank<R>_of<DEVICES>.pt``: the per-class metric
table and the class-retrieval accuracy and counts.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from anomalib.engine import Engine

from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.evaluation import PerClassEvaluation
from tests.calibrated_models import MODELS

# On top of the export tests' small models: OneNIP's refiner-scale calibration drawn from a subset of the training
# images (which must be the same subset on every rank).
EXTRA_ARGUMENTS = {"OneNip": {"training": {"calibration_images": 4}}}


def data_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training computes from data rather than learns.

    The prompt pool (plus OneNIP's bank of training prompts), the post-processor's per-class calibration and
    OneNIP's refiner scale.
    """
    state = {f"prompt_pool.{name}": tensor for name, tensor in model.model.prompt_pool.state_dict().items()}
    for name in ("training_prompts", "training_prompt_counts"):
        if hasattr(model.model, name):
            state[name] = getattr(model.model, name)
    statistics = model.post_processor.class_statistics()
    state.update({f"calibration.class_{name}": value for name, value in statistics.items()})
    scale = getattr(model.model.anomaly_map_generator, "refiner_scale", None)  # OneNIP, set from training images
    if scale is not None:
        state["calibration.refiner_scale"] = scale
    return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}


def evaluation_results(engine: Engine, metrics: dict[str, float]) -> dict[str, object]:
    """The test run's per-class metric table (categories, metric names, values) and class retrieval accuracy."""
    evaluation = next(callback for callback in engine.trainer.callbacks if isinstance(callback, PerClassEvaluation))
    table = evaluation.table
    return {
        "categories": [str(name) for name in table.index],
        "metrics": list(table.columns),
        "table": torch.tensor(table.to_numpy(dtype=float)),
        "retrieval_accuracy": metrics["retrieval_accuracy"],
    }


def main(arguments: list[str] | None = None) -> None:
    """Train for one epoch (with validation: the calibration) and save every rank's data state, or test."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=list(MODELS))
    parser.add_argument("demo_root", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--test-checkpoint", type=Path, help="test this checkpoint instead of training")
    args = parser.parse_args(arguments)
    torch.manual_seed(0)  # every rank builds the same random backbone
    cls, small = MODELS[args.model]
    small = {**small, **EXTRA_ARGUMENTS.get(args.model, {})}
    model = cls(backbone="tf_efficientnet_lite0", pre_trained=False, image_size=64, **small)
    # Then each rank draws different random numbers (loader shuffles), as processes do without a shared seed.
    torch.manual_seed(1 + int(os.environ.get("LOCAL_RANK", "0")))
    datamodule = MultiClassMVTecAD(root=args.demo_root, num_workers=0, train_batch_size=4, eval_batch_size=8)
    engine = Engine(
        default_root_dir=args.out_dir / f"{'test_' if args.test_checkpoint else ''}devices{args.devices}",
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
    )
    if args.test_checkpoint is not None:
        metrics = engine.test(model, datamodule=datamodule, ckpt_path=args.test_checkpoint)[0]
        name = f"test_rank{engine.trainer.global_rank}_of{args.devices}.pt"
        torch.save(evaluation_results(engine, metrics), args.out_dir / name)
        return
    engine.fit(model, datamodule=datamodule)
    torch.save(data_state(model), args.out_dir / f"rank{engine.trainer.global_rank}_of{args.devices}.pt")
    if args.devices == 1:
        engine.trainer.save_checkpoint(args.out_dir / "model.ckpt")


if __name__ == "__main__":
    main()
