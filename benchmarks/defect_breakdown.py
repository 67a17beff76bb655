# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Image AUROC per defect type of every model a harness run trained: what each one catches and what it misses.

Usage:
    python benchmarks/defect_breakdown.py --config benchmarks/configs/logical_cpu.yaml --run <its --output folder> \
        [--root DIR] [--output benchmarks/results/logical_cpu/defect_breakdown.md]

For each model of ``--config`` whose job left a checkpoint under ``<run>/jobs/<name>_unified/``, the checkpoint is
loaded and the test images of ``--root`` are scored with the model's raw scores (its post-processor switched off,
as the harness's per-class metrics are). Per class and defect type: the image AUROC of that type's images against
the class's good images. A root of ``$LOGICAL`` (the config's) is the logical class written again from its seed,
the same files the harness trained and tested on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml
from anomalib.engine import Engine
from invocation import command_line, data_root

from anomalib_pnpt.data import MultiClassMVTecAD, make_demo_dataset
from anomalib_pnpt.evaluation import auroc
from anomalib_pnpt.model_factory import import_class


def dataset_root(root: str, script_file: str) -> Path:
    """The dataset root of a config (``$DATA``, ``$LOGICAL`` as ``run_benchmark.py`` resolves them)."""
    if root == "$LOGICAL":
        folder = Path(tempfile.mkdtemp(prefix="anomalib_pnpt_logical_"))
        return make_demo_dataset(folder, 256, n_train=200, n_test_normal=50, n_test_defect=50, categories=("kit",))
    return Path(root.replace("$DATA", str(data_root(script_file))))


@torch.no_grad()
def raw_scores(model: torch.nn.Module, datamodule: MultiClassMVTecAD, folder: Path) -> pd.DataFrame:
    """Raw image score, class and defect type of every test image."""
    model.post_processor = None  # raw scores, as the per-class metrics use
    model.visualizer = None
    engine = Engine(default_root_dir=folder, logger=False, enable_progress_bar=False)
    rows = []
    for batch in engine.predict(model, dataloaders=datamodule.test_dataloader()):
        for path, score in zip(batch.image_path, batch.pred_score.reshape(-1).tolist(), strict=True):
            rows.append({"category": Path(path).parents[2].name, "defect": Path(path).parent.name, "score": score})
    return pd.DataFrame(rows)


def breakdown(scores: pd.DataFrame) -> dict[str, float]:
    """Image AUROC (percent) of each ``category/defect`` against the category's good images."""
    result = {}
    for category, images in scores.groupby("category"):
        good = images[images.defect == "good"].score
        for defect, defective in images[images.defect != "good"].groupby("defect"):
            labels = torch.tensor([0] * len(good) + [1] * len(defective))
            values = torch.tensor([*good, *defective.score])
            result[f"{category}/{defect}"] = 100 * float(auroc(values, labels))
    return result


def main() -> None:
    """Parse arguments, score every model's checkpoint, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="the --output folder of run_benchmark.py")
    parser.add_argument("--root", default=None, help="dataset root (default: the config's)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    root = Path(args.root) if args.root else dataset_root(config["root"], __file__)
    datamodule = MultiClassMVTecAD(root=root, eval_batch_size=16, num_workers=0)
    datamodule.setup()
    table = {}
    with tempfile.TemporaryDirectory() as folder:
        for entry in config["models"]:
            checkpoints = sorted((args.run / "jobs" / f"{entry['name']}_unified").rglob("model.ckpt"))
            if not checkpoints:
                continue
            model = import_class(entry["class_path"]).load_from_checkpoint(checkpoints[0], weights_only=False).eval()
            table[entry["name"]] = breakdown(raw_scores(model, datamodule, Path(folder)))
            print(entry["name"], {k: round(v, 1) for k, v in table[entry["name"]].items()}, flush=True)
    frame = pd.DataFrame(table).T.round(1)
    output = args.output or args.run / "defect_breakdown.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        f"# Image AUROC per defect type\n\nCommand: `{command_line(sys.argv)}`  \nRaw scores, percent; each defect "
        f"type's images against its class's good images.\n\n{frame.to_markdown()}\n"
    )


if __name__ == "__main__":
    main()
