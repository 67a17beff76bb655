# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""A new product without retraining: leave one class out, add it from its training images, test it.

For every class C of the root (or of ``--classes``): train the model of ``--config`` on the other classes, add
C with :meth:`~anomalib_pnpt.models.prompted_module.PromptedAnomalyModule.add_class` from C's training images
(``train/good``; a fifth held out to calibrate it), then test on every class. A stock PatchCore config adds C
its own way: a PatchCore fitted on C's training images alone, its memory bank appended to the model's. The
same model trained on all classes is the reference. Written to ``--output``: per class and model, image
AUROC / pixel AUROC / pixel AP / PRO and (for C) the seconds adding it took.

Usage:
    python benchmarks/new_class.py --config configs/pnpt_cpu.yaml [--root DIR] [--classes a,b] [--epochs N] \
        [--output benchmarks/results/new_class_pnpt_cpu]

The root ``$DEMO`` is the embedded demo dataset (written to a temporary folder).

With ``--reference-checkpoint`` the all-classes reference is that trained model (it must come from the same
configuration) instead of one trained here, which saves the longest of the trainings.

With ``--checkpoint`` nothing is trained: each class is removed from that trained model and added back from its
training images. The network then has seen the class, so this measures what adding costs and what a prompt made
after training gives against the one made at training time, not how the network generalises to a new product.
With ``--as-new`` too, each class comes back as one the network never trained on, so the models score it without
the network (``untrained_class_scoring``: PNPT's prior, OneNIP's prompt images, a NetworkWithMemory's memory): no
trained part is involved, so this is exactly what a model trained without the class gives for it on that route.

``--untrained-class-scoring`` overrides the networks' own setting (``network``: as a trained class).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from anomalib.engine import Engine
from invocation import command_line, data_root

from anomalib_pnpt.class_commands import load_checkpoint_model
from anomalib_pnpt.data import MultiClassMVTecAD, make_demo_dataset
from anomalib_pnpt.model_factory import build_model
from anomalib_pnpt.models.prompted_module import PromptedAnomalyModule

METRIC_KEYS = ("image_AUROC", "pixel_AUROC", "pixel_AP", "PRO")


def _model(config: dict[str, Any]) -> Any:
    # build_model gives a stock model (PatchCore) its backbone's own normalisation and packaged weights.
    return build_model(config["model"]["class_path"], config["model"].get("init_args", {}))


def _add_to_memory_bank(
    model: Any, config: dict[str, Any], root: Path, category: str, epochs: int, folder: Path
) -> dict[str, Any]:
    """PatchCore's way to add a product: its own one-pass fit on the class's images, the banks concatenated.

    The memory bank is PatchCore's public state (anomalib documents assigning it); the new class's coreset is
    selected at the configured ratio among its own patches, as a PatchCore fitted on that class alone.
    """
    added, _ = _train(config, root, [category], epochs, folder)
    model.model.memory_bank = torch.cat([model.model.memory_bank, added.model.memory_bank])
    images = len(list((root / category / "train" / "good").iterdir()))
    return {"prompt_images": images, "calibration_images": 0, "retrieved_share": None}


def _train(config: dict[str, Any], root: Path, classes: list[str], epochs: int, folder: Path) -> tuple[Any, Engine]:
    torch.manual_seed(0)
    model = _model(config)
    datamodule = MultiClassMVTecAD(root=root, categories=classes, train_batch_size=8, eval_batch_size=16)
    engine = Engine(
        max_epochs=epochs,
        check_val_every_n_epoch=epochs,
        accelerator="cpu",
        default_root_dir=folder,
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(model=model, datamodule=datamodule)
    return model, engine


def _test(model: Any, engine: Engine, root: Path, classes: list[str]) -> dict[str, dict[str, float]]:
    datamodule = MultiClassMVTecAD(root=root, categories=classes, train_batch_size=8, eval_batch_size=16)
    results = engine.test(model=model, datamodule=datamodule)[0]
    table: dict[str, dict[str, float]] = {}
    for category in classes:
        table[category] = {key: float(results.get(f"per_class/{category}/{key}", float("nan"))) for key in METRIC_KEYS}
    return table


def _loaded(checkpoint: Path, root: Path, classes: list[str], prompts_per_class: int | None) -> Any:
    """The checkpoint's model; with ``prompts_per_class``, its pool rebuilt from the training images with that many."""
    if prompts_per_class is None:
        return load_checkpoint_model(checkpoint)[0]
    model = load_checkpoint_model(checkpoint, prompts_per_class=prompts_per_class)[0]
    datamodule = MultiClassMVTecAD(root=root, categories=classes, eval_batch_size=16)
    datamodule.setup()
    model.fill_prompt_pool(datamodule)  # the training images only
    return model.eval()


def _write_results(args: argparse.Namespace, rows: list[dict[str, Any]], classes: list[str], epochs: int) -> None:
    """Write ``results.csv`` and ``results.md`` from the rows so far (after every class: a long run keeps them)."""
    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "results.csv", index=False)
    added = table[table["category"] == table["left_out"]].set_index("category")
    reference_rows = table[table["model"] == "all classes"].set_index("category")
    comparison = pd.DataFrame(
        {
            "all classes image AUROC": reference_rows["image_AUROC"],
            "added image AUROC": added["image_AUROC"],
            "gap": added["image_AUROC"] - reference_rows["image_AUROC"],
            "added pixel AUROC": added["pixel_AUROC"],
            "all classes pixel AUROC": reference_rows["pixel_AUROC"],
            "add_class seconds": added["add_seconds"],
            "images": added["add_images"],
            "scored by": added["scored_by"],
        }
    )
    lines = [
        "# A class added after training ("
        + ("removed from a trained model, then added back" if args.checkpoint else "leave one class out")
        + (" as a class the network never trained on" if args.as_new else "")
        + (f"; added classes scored by: {args.untrained_class_scoring}" if args.untrained_class_scoring else "")
        + ")",
        "",
        f"Command: `{command_line()}`  ",
        f"Model: `{args.checkpoint or args.config}`"
        + (f" with {args.prompts_per_class} prompts per class" if args.prompts_per_class else "")
        + ("" if args.checkpoint else f" init_args, {epochs} epoch(s)")
        + (f"; all-classes reference: `{args.reference_checkpoint}`" if args.reference_checkpoint else "")
        + f"; data `{args.root}`, classes {classes}.",
        "",
        comparison.round(4).to_markdown(),
        "",
        "Every model on every class: `results.csv`.",
    ]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> int:
    """Run the leave-one-class-out comparison and write its tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--root", default=str(data_root(__file__) / "industrial"))
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: all under the root)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's trainer.max_epochs")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="remove and re-add classes of this model")
    parser.add_argument(
        "--as-new",
        action="store_true",
        help="with --checkpoint: add each class back as one the network never trained on (its prompt scores it)",
    )
    parser.add_argument(
        "--prompts-per-class",
        type=int,
        default=None,
        help="with --checkpoint (OneNIP): rebuild the pool from the training images with this many prompts per class",
    )
    parser.add_argument(
        "--untrained-class-scoring",
        choices=["prompt", "network"],
        default=None,
        help="how the models score an added class they never trained on (default: the model's own setting)",
    )
    parser.add_argument(
        "--reference-checkpoint",
        type=Path,
        default=None,
        help="the all-classes reference: this trained model (same config) instead of training one here",
    )
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    epochs = args.epochs or int(config.get("trainer", {}).get("max_epochs", 1))
    if args.checkpoint is not None:
        epochs = 0
    with tempfile.TemporaryDirectory() as work:
        root = make_demo_dataset(Path(work) / "demo") if args.root == "$DEMO" else Path(args.root)
        classes = args.classes.split(",") if args.classes else sorted(p.name for p in root.iterdir() if p.is_dir())
        rows: list[dict[str, Any]] = []
        jobs = args.output / "jobs"  # the trained models are kept (git-ignored) for probes of what adding gave
        if args.checkpoint is not None:
            reference = _loaded(args.checkpoint, root, classes, args.prompts_per_class)
            engine = Engine(accelerator="cpu", default_root_dir=jobs / "all", logger=False)
        elif args.reference_checkpoint is not None:
            reference = load_checkpoint_model(args.reference_checkpoint)[0]
            engine = Engine(accelerator="cpu", default_root_dir=jobs / "all", logger=False)
        else:
            reference, engine = _train(config, root, classes, epochs, jobs / "all")
        for category, metrics in _test(reference, engine, root, classes).items():
            rows.append({"model": "all classes", "left_out": None, "category": category, **metrics})
        for left_out in classes:
            others = [c for c in classes if c != left_out]
            if args.checkpoint is not None:
                model = copy.deepcopy(reference)
                model.remove_class(left_out)
                if args.as_new:  # what a model trained without the class gives where the network plays no part
                    model.trained_categories = [c for c in model.trained_categories if c != left_out]
                engine = Engine(accelerator="cpu", default_root_dir=jobs / f"without_{left_out}", logger=False)
            else:
                model, engine = _train(config, root, others, epochs, jobs / f"without_{left_out}")
            start = time.perf_counter()
            if isinstance(model, PromptedAnomalyModule):
                if args.untrained_class_scoring is not None:
                    model.model.untrained_class_scoring = args.untrained_class_scoring
                summary = model.add_class(left_out, root / left_out / "train" / "good")
            else:
                folder = jobs / f"only_{left_out}"
                summary = _add_to_memory_bank(model, config, root, left_out, epochs, folder)
            seconds = time.perf_counter() - start
            print(json.dumps({**summary, "seconds": seconds}), flush=True)
            if isinstance(model, PromptedAnomalyModule) and args.checkpoint is None:
                engine.trainer.save_checkpoint(jobs / f"without_{left_out}" / f"{left_out}_added.ckpt")
            for category, metrics in _test(model, engine, root, classes).items():
                added = category == left_out
                rows.append(
                    {
                        "model": "removed, then added" if args.checkpoint is not None else "left out, then added",
                        "left_out": left_out,
                        "category": category,
                        **metrics,
                        "add_seconds": seconds if added else None,
                        "add_images": summary["prompt_images"] + summary["calibration_images"] if added else None,
                        "retrieved_share": summary["retrieved_share"] if added else None,
                        "scored_by": summary.get("scored_by", "memory bank") if added else None,
                    }
                )
            _write_results(args, rows, classes, epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
