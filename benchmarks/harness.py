# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Benchmark harness: train and test a list of anomalib models on a multi-class root, unified and separate.

*Unified* trains one model on the normal images of all classes and tests it on every class (the papers'
multi-class protocol); *separate* trains one model per class (anomalib's usual protocol). Each job runs in
its own subprocess so that peak memory is measured per job. The results are one long table (one row per
model, mode and class, plus the class mean) written as CSV and Markdown, and one bar chart per metric.

Measured per job: fit wall time, inference milliseconds per image (model forward only, batches from the
test set, after one warm-up batch), peak resident memory of the job's process, and the model's size
(bytes of its serialised ``state_dict``, i.e. what a checkpoint carries).

Example:
    ``python benchmarks/run_benchmark.py --config benchmarks/configs/shipped_cpu.yaml``
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from epoch_selection import EpochSelection
from learning_curve import LearningCurve
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger

from anomalib_pnpt.evaluation.per_class import METRICS
from anomalib_pnpt.model_factory import build_model

logger = logging.getLogger(__name__)


@dataclass
class HarnessJob:
    """One training + test run: a model on a set of categories.

    Args:
        name: Display name of the model (e.g. ``"PatchCore"``).
        class_path: Import path of the AnomalibModule (anomalib's or any plugin's).
        init_args: Constructor arguments.
        root: Dataset root (MVTec AD layout).
        categories: Categories of this job (all of them for unified mode, one for separate).
        mode: ``"unified"`` or ``"separate"``.
        max_epochs: Training epochs.
        train_batch_size: Training batch size.
        eval_batch_size: Test batch size.
        num_workers: Dataloader workers.
        accelerator: Lightning accelerator.
        seed: Random seed.
        output_dir: Where the job writes its files.
        learning_curve_epochs: Epochs after which to measure per-class test metrics (written to
            ``learning_curve.csv`` in ``output_dir``; 0 is the network before its first step).
        select_epoch: Test the epoch chosen on validation images and unseen synthetic defects
            (``epoch_selection.py``, its scores in ``epoch_selection.csv``) instead of the last one.
    """

    name: str
    class_path: str
    init_args: dict[str, Any]
    root: str
    categories: list[str]
    mode: str
    max_epochs: int = 1
    train_batch_size: int = 16
    eval_batch_size: int = 16
    num_workers: int = 2
    accelerator: str = "auto"
    seed: int = 0
    output_dir: str = "results/benchmark"
    learning_curve_epochs: list[int] = field(default_factory=list)
    select_epoch: bool = False


def _state_dict_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.no_grad()
def measure_inference_ms(model: torch.nn.Module, dataloader: Any, max_images: int = 64) -> float:
    """Milliseconds per image of ``model(images)`` (pre- and post-processing included), data loading excluded."""
    model.eval()
    device = next(model.parameters()).device
    batches = []
    count = 0
    for batch in dataloader:
        batches.append(batch.image.to(device))
        count += len(batch.image)
        if count >= max_images:
            break
    model(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for images in batches:
        model(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / count


PROGRESS_PREFIX = "[progress] "


class JobProgress(Callback):
    """Print one line per training epoch, validation and test (the harness forwards them from the job's log).

    Example:
        >>> JobProgress().started is None
        True
    """

    def __init__(self) -> None:
        super().__init__()
        self.started: float | None = None

    def _say(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started if self.started is not None else 0.0
        print(f"{PROGRESS_PREFIX}{text} ({elapsed:.0f} s)", flush=True)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock."""
        del trainer, pl_module
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Report the finished epoch."""
        del pl_module
        self._say(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} trained")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Report the end of a validation (calibration) pass."""
        del trainer, pl_module
        self._say("validated (calibration fitted)")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Report the end of the test."""
        del trainer, pl_module
        self._say("tested")


def build_datamodule(job: HarnessJob) -> Any:
    """The job's multi-class datamodule: its validation images are held out from training, never test images.

    Thresholds and normalisation (ours per class, stock models' global ones) are fitted on the validation
    split, so it must not be anomalib's ``same_as_test``.

    Args:
        job: The job.

    Returns:
        A :class:`~anomalib_pnpt.data.MultiClassMVTecAD`.
    """
    from anomalib_pnpt.data import MultiClassMVTecAD

    return MultiClassMVTecAD(
        root=job.root,
        categories=job.categories,
        train_batch_size=job.train_batch_size,
        eval_batch_size=job.eval_batch_size,
        num_workers=job.num_workers,
        per_class_evaluation=False,
        val_split_mode="from_train",
    )


POOLED = ("pooled_AUROC_raw", "pooled_F1max_raw", "pooled_AUROC_calibrated", "pooled_F1_calibrated")


@torch.no_grad()
def calibrated_pooled_metrics(model: torch.nn.Module, dataloader: Any) -> dict[str, float]:
    """Image AUROC and F1 over ALL test images at once, on the model's own calibrated output.

    ``model(images)`` is anomalib's full chain (pre-processing, model, post-processing: our per-class
    calibration, a stock model's global normalisation and threshold), i.e. what the exported model decides.

    Args:
        model: A trained anomalib model.
        dataloader: The test images.

    Returns:
        ``pooled_AUROC_calibrated`` (of the normalised scores) and ``pooled_F1_calibrated`` (of ``pred_label``).
    """
    from anomalib_pnpt.evaluation import auroc, f1_score

    model.eval()
    device = next(model.parameters()).device
    scores, labels, truth = [], [], []
    for batch in dataloader:
        output = model(batch.image.to(device))
        scores.append(output.pred_score.float().reshape(-1).cpu())
        labels.append(output.pred_label.reshape(-1).cpu())
        truth.append(batch.gt_label.reshape(-1).cpu())
    score, label, gt = torch.cat(scores), torch.cat(labels), torch.cat(truth)
    return {"pooled_AUROC_calibrated": auroc(score, gt), "pooled_F1_calibrated": f1_score(label, gt)}


def run_job(job: HarnessJob) -> list[dict[str, Any]]:
    """Train and test one job in THIS process; return one row per class of the job."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_pnpt.evaluation import PerClassEvaluation

    seed_everything(job.seed, workers=True)
    output_dir = Path(job.output_dir)
    datamodule = build_datamodule(job)
    model = build_model(job.class_path, job.init_args)
    evaluation = PerClassEvaluation(output_dir=output_dir)
    callbacks: list = [evaluation, JobProgress()]
    curve = (
        LearningCurve(job.learning_curve_epochs, output=Path(output_dir) / "learning_curve.csv")
        if job.learning_curve_epochs
        else None
    )
    if curve is not None:
        callbacks.append(curve)
    selection = EpochSelection(output=output_dir / "epoch_selection.csv") if job.select_epoch else None
    if selection is not None:
        callbacks.append(selection)
    engine = Engine(
        default_root_dir=output_dir,
        max_epochs=job.max_epochs,
        accelerator=job.accelerator,
        callbacks=callbacks,
        # train_loss and the networks' fit against their prior per epoch (fit_*_loss): <job>/metrics.csv
        logger=CSVLogger(save_dir=output_dir, name="", version=""),
        enable_progress_bar=False,
        # Validation only feeds anomalib's normalisation statistics: once, after the last epoch, is enough.
        check_val_every_n_epoch=job.max_epochs,
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    chosen_epoch = job.max_epochs
    if selection is not None:
        chosen_epoch = selection.restore(model)
        # The thresholds were fitted on the last epoch's maps: fit them again on the chosen network's.
        engine.validate(model, datamodule=datamodule)
    engine.test(model, datamodule=datamodule)
    if curve is not None:
        pd.DataFrame(curve.rows).assign(model=job.name, mode=job.mode).to_csv(
            output_dir / "learning_curve.csv", index=False
        )
    pooled = {
        "pooled_AUROC_raw": evaluation.pooled["image_AUROC"],
        "pooled_F1max_raw": evaluation.pooled["image_F1max"],
        **calibrated_pooled_metrics(model, datamodule.test_dataloader()),
    }
    ms_per_image = measure_inference_ms(model, datamodule.test_dataloader())
    import resource  # Unix only: imported here so that importing the harness (the CLI does) works everywhere

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        peak_rss_mb = max(peak_rss_mb, torch.cuda.max_memory_allocated() / 2**20)
    common = {
        "model": job.name,
        "mode": job.mode,
        "fit_s": fit_seconds,
        "tested_epoch": chosen_epoch,
        "ms_per_image": ms_per_image,
        "peak_memory_mb": peak_rss_mb,
        "model_size_mb": _state_dict_bytes(model) / 2**20,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
        **pooled,
    }
    table = evaluation.table
    if table is None:
        msg = f"{job.name}: the test produced no predictions"
        raise RuntimeError(msg)
    rows = []
    for category in job.categories:
        rows.append({**common, "category": category, **{m: float(table.loc[category, m]) for m in METRICS}})
    return rows


def run_job_in_subprocess(job: HarnessJob) -> list[dict[str, Any]]:
    """Run :func:`run_job` in a fresh Python process (clean peak-memory figure); raise if it fails."""
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec_file:
        json.dump(asdict(job), spec_file)
    result_path = Path(job.output_dir) / "rows.json"
    command = [sys.executable, str(Path(__file__).resolve()), spec_file.name, str(result_path)]
    log_path = Path(job.output_dir) / "job.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process,
    ):
        for line in process.stdout:  # the whole output goes to the log; progress lines also to the console
            log.write(line)
            log.flush()
            if line.startswith(PROGRESS_PREFIX):
                print(f"  {job.name} {job.mode}: {line[len(PROGRESS_PREFIX) :].strip()}", flush=True)
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        msg = f"Benchmark job {job.name}/{job.mode}/{job.categories} failed (log: {log_path}):\n{tail}"
        raise RuntimeError(msg)
    return json.loads(result_path.read_text())


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Add one ``mean`` row per model and mode (metrics averaged over classes; costs summed for separate)."""
    frame = pd.DataFrame(rows)
    summaries = []
    for (model, mode), group in frame.groupby(["model", "mode"], sort=False):
        summary = {"model": model, "mode": mode, "category": "mean", **group[list(METRICS)].mean().to_dict()}
        # Separate mode trains one model per class: its cost for the class set is the sum over classes.
        jobs = group.drop_duplicates(subset=["fit_s"]) if mode == "unified" else group
        summary["fit_s"] = jobs["fit_s"].sum()
        summary["model_size_mb"] = jobs["model_size_mb"].sum()
        summary["ms_per_image"] = group["ms_per_image"].mean()
        summary["peak_memory_mb"] = group["peak_memory_mb"].max()
        summary["device"] = group["device"].iloc[0]
        if "tested_epoch" in group:  # one training in unified mode; separate mode's classes may differ
            summary["tested_epoch"] = group["tested_epoch"].iloc[0] if mode == "unified" else float("nan")
        for column in POOLED:  # over all test images of a unified model; separate models have no pooled figure
            if column in group:
                summary[column] = group[column].iloc[0] if mode == "unified" else float("nan")
        summaries.append(summary)
    return pd.concat([frame, pd.DataFrame(summaries)], ignore_index=True)


def write_results(table: pd.DataFrame, output_dir: Path, command: str) -> None:
    """Write ``results.csv``, ``results.md`` (with the command) and ``<metric>.png`` bar charts."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "results.csv", index=False)
    shown = table.copy()
    for metric in [*METRICS, *(c for c in POOLED if c in shown)]:
        shown[metric] = (100 * shown[metric]).round(1)
    for column in ("fit_s", "ms_per_image", "peak_memory_mb", "model_size_mb"):
        shown[column] = shown[column].round(1)
    text = (
        f"Command: `{command}`\n\nMetrics in percent: per class, threshold-free, raw scores. `pooled_*`: over the "
        "test images of ALL classes at once (one decision rule), on raw scores (AUROC, best F1 over thresholds) "
        "and on the model's calibrated output (AUROC of the normalised score, F1 of `pred_label`; calibrated on "
        "normal images held out from training).\n\n"
    )
    text += shown.to_markdown(index=False) + "\n"
    (output_dir / "results.md").write_text(text)
    table = table.assign(run=table["model"] + " (" + table["mode"] + ")")
    for metric in METRICS:
        pivot = table.pivot_table(index="category", columns="run", values=metric, sort=False)
        axis = (100 * pivot).plot.bar(figsize=(8, 4), rot=0)
        axis.set_ylabel(f"{metric} (%)")
        axis.set_ylim(max(0, float((100 * pivot).min().min()) - 10), 100)
        axis.legend(fontsize=7)
        plt.tight_layout()
        plt.savefig(output_dir / f"{metric}.png", dpi=100)
        plt.close()


def _job_main(spec_path: str, result_path: str) -> None:
    job = HarnessJob(**json.loads(Path(spec_path).read_text()))
    rows = run_job(job)
    Path(result_path).write_text(json.dumps(rows))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    _job_main(sys.argv[1], sys.argv[2])
