# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Train and test a list of models, unified and separate, on a multi-class root; write one results table.

Usage:
    python benchmarks/run_benchmark.py --config benchmarks/configs/shipped_cpu.yaml \
        [--output benchmarks/results/shipped_cpu] [--root DIR] [--max-epochs N]

The config lists ``models`` (``name``, ``class_path``, ``init_args``), ``modes`` and the data root (the
environment variable ``ANOMALIB_PNPT_DATA`` replaces ``$DATA`` there and in string ``init_args``; a root of
``$DEMO`` is the embedded demo dataset, ``$LOGICAL`` its logical-anomaly class ``kit`` at 200 / 100 images and
256 px, each written to a temporary folder). Exits non-zero if any job fails.
``--models A,B`` runs only those entries; ``--parallel N`` runs N jobs at once. A model's ``seed`` (default: the
config's ``seed``, else 0) seeds its job, so a second seed of one configuration is a second entry with another name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from harness import HarnessJob, run_job_in_subprocess, summarise, write_results
from invocation import command_line, data_root

from anomalib_pnpt.data import MultiClassMVTecAD


def _with_data_dir(value: Any, data_dir: str) -> Any:
    """``value`` with ``$DATA`` replaced in every string, nested ones included (a network's ``init_args``)."""
    if isinstance(value, str):
        return value.replace("$DATA", data_dir)
    if isinstance(value, dict):
        return {key: _with_data_dir(item, data_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_data_dir(item, data_dir) for item in value]
    return value


def _run(job: HarnessJob) -> list[dict]:
    print(f"running {job.name} {job.mode} {job.categories}", flush=True)
    job_rows = run_job_in_subprocess(job)
    print(f"  done {job.name}: {job_rows[-1]['fit_s']:.0f} s fit", flush=True)
    return job_rows


def jobs_of(
    config: dict[str, Any],
    root: str,
    output: Path,
    data_dir: str,
    selected: set[str] | None = None,
    max_epochs: int | None = None,
    accelerator: str | None = None,
) -> list[HarnessJob]:
    """The harness jobs a benchmark config describes: one per model, mode and class group.

    Args:
        config: The parsed YAML (``models``, ``modes`` and the shared settings).
        root: Dataset root.
        output: The run's output folder (each job writes under ``output/jobs``).
        data_dir: What ``$DATA`` in string ``init_args`` stands for.
        selected: Model names to keep (``None``: all).
        max_epochs: Overrides every model's ``max_epochs``.
        accelerator: Overrides the config's accelerator.

    Example:
        >>> models = [{"name": "A", "class_path": "Padim", "seed": 3}, {"name": "B", "class_path": "Padim"}]
        >>> config = {"models": models, "modes": ["unified"], "categories": ["x"]}
        >>> [(job.name, job.seed) for job in jobs_of(config, "/data", Path("out"), "/data")]
        [('A', 3), ('B', 0)]
    """
    categories = config.get("categories") or MultiClassMVTecAD(root=root).categories
    jobs = []
    for spec in config["models"]:
        if selected is not None and spec["name"] not in selected:
            continue
        for mode in config.get("modes", ["unified", "separate"]):
            groups = [categories] if mode == "unified" else [[c] for c in categories]
            jobs += [
                HarnessJob(
                    name=spec["name"],
                    class_path=spec["class_path"],
                    init_args=_with_data_dir(spec.get("init_args", {}), data_dir),
                    root=root,
                    categories=group,
                    mode=mode,
                    max_epochs=max_epochs or spec.get("max_epochs", config.get("max_epochs", 1)),
                    train_batch_size=spec.get("train_batch_size", config.get("train_batch_size", 16)),
                    eval_batch_size=config.get("eval_batch_size", 16),
                    num_workers=config.get("num_workers", 2),
                    accelerator=accelerator or config.get("accelerator", "auto"),
                    output_dir=str(
                        output / "jobs" / (f"{spec['name']}_{mode}" + ("" if mode == "unified" else f"_{group[0]}"))
                    ),
                    learning_curve_epochs=spec.get("learning_curve_epochs", []),
                    select_epoch=spec.get("select_epoch", False),
                    seed=spec.get("seed", config.get("seed", 0)),
                )
                for group in groups
            ]
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--root", default=None, help="dataset root (overrides the config)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--accelerator", default=None, help="Lightning accelerator (overrides the config)")
    parser.add_argument("--resume", action="store_true", help="reuse the rows of jobs that already finished")
    parser.add_argument("--models", default=None, help="comma-separated model names of the config to run (default all)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="jobs run at once (e.g. ablations on one GPU); their time and memory columns then share the machine",
    )
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    data_dir = str(data_root(__file__))
    root = args.root or config["root"].replace("$DATA", data_dir)
    if root == "$DEMO":
        from anomalib_pnpt.data import make_demo_dataset

        root = str(make_demo_dataset(Path(tempfile.mkdtemp(prefix="anomalib_pnpt_demo_"))))
    elif root == "$LOGICAL":  # the logical-anomaly class at its benchmark size (anomalib-pnpt demo-data ... kit)
        from anomalib_pnpt.data import make_demo_dataset

        folder = Path(tempfile.mkdtemp(prefix="anomalib_pnpt_logical_"))
        root = str(make_demo_dataset(folder, 256, n_train=200, n_test_normal=50, n_test_defect=50, categories=("kit",)))
    if not Path(root).is_dir():
        print(f"SKIPPED: dataset root '{root}' not found (set ANOMALIB_PNPT_DATA or --root).")
        return 0
    output = args.output or Path("benchmarks/results") / args.config.stem
    selected = set(args.models.split(",")) if args.models else None
    rows, pending = [], []
    for job in jobs_of(config, root, output, data_dir, selected, args.max_epochs, args.accelerator):
        finished = Path(job.output_dir) / "rows.json"
        if args.resume and finished.is_file():
            print(f"reusing {finished}", flush=True)
            rows += json.loads(finished.read_text())
            continue
        pending.append(job)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for job_rows in pool.map(_run, pending):
            rows += job_rows
    table = summarise(rows)
    command = command_line()
    write_results(table, output, command)
    curves = [pd.read_csv(path) for path in sorted((output / "jobs").glob("*/learning_curve.csv"))]
    curves = [curve for curve in curves if "category" in curve.columns]  # no point reached (e.g. --max-epochs 1)
    if curves:
        curve = pd.concat(curves, ignore_index=True)
        curve.to_csv(output / "learning_curve.csv", index=False)
        shown = curve[curve["category"] == "mean"].round(4)
        (output / "learning_curve.md").write_text(f"Command: `{command}`\n\n{shown.to_markdown(index=False)}\n")
    print((output / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
