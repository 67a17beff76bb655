# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Where a training epoch's time goes: Lightning's SimpleProfiler over the CPU config of a model.

Trains the model of a CLI config (``configs/pnpt_cpu.yaml``, ``configs/onenip_cpu.yaml``) on the shared
industrial data for ``--epochs`` epochs (``--batches`` training batches each, or whole epochs with ``--batches 0``;
the prompt pool, which also fills the feature cache, is built first) and one validation at the end (the per-class
calibration), with ``profiler="simple"``. The models mark the parts of their training step (features from the
cache or the backbone, synthetic anomalies, network forward + loss); Lightning times data loading, callbacks,
backward and the optimizer step. Every epoch gets its own breakdown: with OneNIP's bank of synthetic copies
(``synthetic_refresh_epochs: 3``) the first epoch makes the copies and the next two reuse them, so the epochs
differ.

Usage:
    python benchmarks/epoch_profile.py --config configs/pnpt_cpu.yaml [--batches 30] [--epochs 1] [--root DIR] \
        [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml
from anomalib.engine import Engine
from invocation import command_line, data_root
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.profilers import SimpleProfiler

from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.model_factory import build_model


def _total(durations: dict[str, list[float]], *needles: str) -> float:
    return sum(sum(v) for k, v in durations.items() if all(n in k for n in needles))


class EpochMarks(Callback):
    """How many durations of each action the profiler had recorded at every training epoch's start and end."""

    def __init__(self, profiler: SimpleProfiler) -> None:
        self.profiler = profiler
        self.marks: list[tuple[dict[str, int], dict[str, int]]] = []

    def _counts(self) -> dict[str, int]:
        return {action: len(values) for action, values in self.profiler.recorded_durations.items()}

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        del trainer, pl_module
        self.marks.append((self._counts(), {}))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        del trainer, pl_module
        self.marks[-1] = (self.marks[-1][0], self._counts())

    def between(self, epoch: int) -> dict[str, list[float]]:
        """The durations recorded inside one training epoch (its batches and their hooks)."""
        start, end = self.marks[epoch]
        return {
            action: values[start.get(action, 0) : end.get(action, len(values))]
            for action, values in self.profiler.recorded_durations.items()
        }


def breakdown(durations: dict[str, list[float]], name: str, images: int) -> dict:
    """Parts of the training batches, the network's share of them and the per-image costs."""
    step = {
        "data loading (decode, resize; dataloader next)": _total(durations, "train_dataloader_next"),
        "pre-processing (PreProcessor callback)": _total(durations, "PreProcessor", "on_train_batch_start"),
        "features (cache or backbone)": _total(durations, f"[{name}] features"),
        "synthetic anomalies": _total(durations, f"[{name}] synthetic anomalies"),
        "backbone on synthetic copies": _total(durations, f"[{name}] backbone on synthetic"),
        "network forward + loss": _total(durations, f"[{name}] network forward"),
        "backward": _total(durations, "[Strategy]", ".backward"),
        "optimizer step + zero_grad (outside forward/backward)": _total(durations, "optimizer_step")
        - _total(durations, "[Strategy]", "training_step")
        - _total(durations, "[Strategy]", ".backward"),
        "logging + other callbacks (train batch hooks)": _total(durations, "[Callback]", "on_train_batch")
        - _total(durations, "PreProcessor", "on_train_batch_start"),
    }
    network = (
        step["network forward + loss"]
        + step["backward"]
        + step["optimizer step + zero_grad (outside forward/backward)"]
    )
    batches_s = _total(durations, "run_training_batch") + step["data loading (decode, resize; dataloader next)"]
    return {
        "training batches_s (run_training_batch + dataloader next)": batches_s,
        "parts_s": step,
        "network_s": network,
        "network_share_of_batches": network / batches_s,
        "train_ms_per_image": 1000 * batches_s / images,
        "network_ms_per_image": 1000 * network / images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=30, help="training batches per epoch (0: whole epochs)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--root", type=Path, default=None, help="data root (default: the shared industrial data)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/epoch_profile"))
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    shared = data_root(__file__)
    init_args = {
        key: value.replace("../shared/data", str(shared)) if isinstance(value, str) else value
        for key, value in config["model"]["init_args"].items()
    }
    data_args = dict(config["data"]["init_args"], root=str(args.root or shared / "industrial"))
    seed_everything(0)
    model = build_model(config["model"]["class_path"], init_args)
    datamodule = MultiClassMVTecAD(**data_args)
    name = type(model).__name__
    args.output.mkdir(parents=True, exist_ok=True)
    profiler = SimpleProfiler(dirpath=args.output, filename=f"{name}_simple_profiler")
    marks = EpochMarks(profiler)
    engine = Engine(
        accelerator="cpu",
        max_epochs=args.epochs,
        limit_train_batches=args.batches or None,
        check_val_every_n_epoch=args.epochs,
        callbacks=[marks],
        profiler=profiler,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tempfile.mkdtemp(prefix="epoch_profile_"),
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    durations = profiler.recorded_durations
    images = len(datamodule.train_data) if not args.batches else args.batches * data_args["train_batch_size"]
    images = min(images, len(datamodule.train_data))
    # Lightning runs the validation (here: the per-class calibration) inside the last training epoch.
    validation_s = _total(durations, "[_EvaluationLoop].val_next") + _total(durations, "validation_step")
    validation_s += _total(durations, "[Callback]", "on_validation")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    result = {
        "command": command_line(),
        "model": name,
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "train_batches": args.batches or "all",
        "epochs": args.epochs,
        "fit_s (pool build + epochs + validation)": fit_s,
        "validation_s (calibration pass)": validation_s,
        "prompt pool build_s": _total(durations, "on_train_start"),
        "all epochs": breakdown(durations, name, images * args.epochs),
        "per epoch": [breakdown(marks.between(epoch), name, images) for epoch in range(len(marks.marks))],
    }
    (args.output / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
