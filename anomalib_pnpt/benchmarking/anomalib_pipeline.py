# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib benchmark`` that accepts plugin class paths and fails when a job fails.

anomalib's benchmark pipeline resolves models with ``get_model`` (an allow-list of ``anomalib.models``
modules) and datamodules by class NAME inside ``anomalib.data``, so ``class_path: anomalib_pnpt.Pnpt`` or
``anomalib_pnpt.data.MultiClassMVTecAD`` is rejected; and its runners log a failed job and still exit 0.

:class:`PluginBenchmark` runs :class:`PluginBenchmarkJob` (anomalib's ``BenchmarkJob``: same Engine run, same
result columns) with a job generator that imports any class path that is an ``AnomalibModule`` /
``AnomalibDataModule`` subclass, and fails the command when a job fails. On top of anomalib's pipeline:

* models are built by :func:`anomalib_pnpt.model_factory.build_model` (the backbone's own normalisation; offline
  ImageNet weights for ``pre_trained: true`` Lite backbones), the same rule as the benchmark harness;
* a grid over whole model entries, each with its own ``init_args`` and ``max_epochs`` (anomalib's Engine
  would otherwise train PNPT for Lightning's 1000 epochs), and an optional display ``name``;
* results of grid points with different keys (init arguments, per-class metrics of other categories) are
  collected into one table instead of anomalib's ``KeyError``;
* besides anomalib's ``results.csv``, a comparison table ``comparison.csv`` / ``comparison.md`` (per class
  and mean, every model) from the per-class metrics of the multi-class datamodules.

Example YAML: ``benchmarks/configs/anomalib_benchmark_industrial.yaml``. :func:`register` puts the pipeline
into anomalib's CLI pipeline registry; the ``anomalib-pnpt`` command (anomalib's CLI with the plugin
registered) calls it, so ``anomalib-pnpt benchmark --config cfg.yaml`` is ``anomalib benchmark`` with our models.

Example:
    >>> from anomalib_pnpt.benchmarking.anomalib_pipeline import register
    >>> register()
    >>> from anomalib.cli.pipelines import PIPELINE_REGISTRY
    >>> PIPELINE_REGISTRY["benchmark"].__name__
    'PluginBenchmark'
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pandas as pd
from anomalib.data import AnomalibDataModule, get_datamodule
from anomalib.engine import Engine
from anomalib.models import AnomalibModule, get_model
from anomalib.pipelines import Benchmark
from anomalib.pipelines.benchmark.generator import BenchmarkJobGenerator
from anomalib.pipelines.benchmark.job import BenchmarkJob
from anomalib.pipelines.components.base import Runner
from anomalib.pipelines.components.runners import SerialRunner
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict
from anomalib.pipelines.types import PREV_STAGE_RESULT
from anomalib.utils.config import flatten_dict
from lightning.pytorch import seed_everything

from anomalib_pnpt.model_factory import build_model

logger = logging.getLogger(__name__)

PER_CLASS_KEY = re.compile(r"^per_class/(?P<category>[^/]+)/(?P<metric>[^/]+)$")


class BenchmarkJobFailedError(RuntimeError):
    """Raised when any benchmark job fails (anomalib only logs it)."""


def instantiate(config: dict[str, Any], base: type) -> Any:
    """Instantiate ``{"class_path": ..., "init_args": {...}}`` if the class path is a subclass of ``base``.

    Models given by a dotted path or an ``anomalib.models`` class name are built by
    :func:`~anomalib_pnpt.model_factory.build_model` (the backbone's own normalisation, offline Lite weights);
    other names and datamodules go through anomalib's own resolvers (so every config anomalib accepts is still
    accepted), dotted datamodule paths outside anomalib are imported directly.

    Args:
        config: The ``model`` or ``data`` entry of a benchmark grid point.
        base: ``AnomalibModule`` or ``AnomalibDataModule``.

    Returns:
        The instance.

    Raises:
        TypeError: If the class is not a subclass of ``base``.
    """
    class_path = str(config["class_path"])
    if base is AnomalibModule and (
        hasattr(importlib.import_module("anomalib.models"), class_path) or "." in class_path
    ):
        model = build_model(class_path, dict(config.get("init_args") or {}))
        if not isinstance(model, base):
            msg = f"{class_path} is not a {base.__name__} subclass."
            raise TypeError(msg)
        return model
    if "." not in class_path or class_path.startswith("anomalib."):
        return get_model(config) if base is AnomalibModule else get_datamodule(config)
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        msg = f"{class_path} is not a {base.__name__} subclass."
        raise TypeError(msg)
    return cls(**dict(config.get("init_args") or {}))


class PluginBenchmarkJob(BenchmarkJob):
    """anomalib's benchmark job with a per-model training length and union-of-keys collection.

    Args:
        accelerator: Lightning accelerator.
        model: The model.
        datamodule: The datamodule.
        seed: Seed.
        flat_cfg: The grid point, flattened (written into the results).
        max_epochs: Training epochs (``None``: the model's ``trainer_arguments`` or Lightning's default).
        name: Display name in the comparison table (default: the model's class name).
    """

    def __init__(
        self,
        accelerator: str,
        model: AnomalibModule,
        datamodule: AnomalibDataModule,
        seed: int,
        flat_cfg: dict,
        max_epochs: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, model=model, datamodule=datamodule, seed=seed, flat_cfg=flat_cfg)
        self.max_epochs = max_epochs
        self.display_name = name or type(model).__name__

    def run(self, task_id: int | None = None) -> dict[str, Any]:
        """Train and test as anomalib's job does, for ``max_epochs``; return one result row."""
        devices: str | list[int] = [task_id] if task_id is not None else "auto"
        epochs = {"max_epochs": self.max_epochs} if self.max_epochs is not None else {}
        logger.info("benchmark job %s: training%s", self.display_name, f" for {self.max_epochs} epochs" * bool(epochs))
        start = time.time()
        with TemporaryDirectory() as temp_dir:
            seed_everything(self.seed)
            engine = Engine(accelerator=self.accelerator, devices=devices, default_root_dir=temp_dir, **epochs)
            engine.fit(self.model, self.datamodule)
            test_start = time.time()
            test_results = engine.test(self.model, self.datamodule)
        end = time.time()
        durations = {"job_duration": end - start, "fit_duration": test_start - start, "test_duration": end - test_start}
        return {
            "name": self.display_name,
            "accelerator": self.accelerator,
            **durations,
            **self.flat_cfg,
            **test_results[0],
        }

    @staticmethod
    def collect(results: list[dict[str, Any]]) -> pd.DataFrame:
        """One row per job; a key missing from a job (other init arguments, other classes) is left empty."""
        return pd.DataFrame(results)

    @staticmethod
    def save(result: pd.DataFrame) -> Path:
        """Write anomalib's ``results.csv`` and the comparison table into ``runs/benchmark/<time>/``.

        Returns:
            The directory written.
        """
        BenchmarkJob._print_tabular_results(result)
        directory = Path("runs") / BenchmarkJob.name / datetime.now().strftime("%Y-%m-%d-%H_%M_%S")
        directory.mkdir(parents=True, exist_ok=True)
        result.to_csv(directory / "results.csv", index=False)
        table = comparison_table(result)
        if not table.empty:
            table.to_csv(directory / "comparison.csv", index=False)
            shown = table.copy()
            metrics = [c for c in shown.columns if c not in {"model", "category"}]
            shown[metrics] = (100 * shown[metrics]).round(1)
            (directory / "comparison.md").write_text(
                "Per-class metrics in percent (threshold-free, raw scores), every model of the run.\n\n"
                + shown.to_markdown(index=False)
                + "\n"
            )
            print(shown.to_markdown(index=False))
        logger.info("Saved results to %s", directory)
        return directory


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Long table ``model, category, <metric>...`` from the ``per_class/<class>/<metric>`` columns of the results.

    Args:
        results: The collected results (one row per job).

    Returns:
        One row per model and class (``mean`` included); empty if no job logged per-class metrics.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _, result in results.iterrows():
        label = str(result.get("name") or result.get("model.class_path"))
        for key, value in result.items():
            match = PER_CLASS_KEY.match(str(key))
            if match is None or pd.isna(value):
                continue
            entry = rows.setdefault((label, match["category"]), {"model": label, "category": match["category"]})
            entry[match["metric"]] = float(value)
    return pd.DataFrame(list(rows.values()))


class PluginBenchmarkJobGenerator(BenchmarkJobGenerator):
    """anomalib's benchmark job generator, resolving plugin class paths too."""

    @property
    def job_class(self) -> type:
        """The job type (collection and saving are its static methods)."""
        return PluginBenchmarkJob

    def generate_jobs(
        self, args: dict, previous_stage_result: PREV_STAGE_RESULT
    ) -> Generator[BenchmarkJob, None, None]:
        """Yield one :class:`PluginBenchmarkJob` per grid point."""
        del previous_stage_result
        for container in get_iterator_from_grid_dict(args):
            model_config = dict(container["model"])
            max_epochs = model_config.pop("max_epochs", None)
            name = model_config.pop("name", None)
            yield PluginBenchmarkJob(
                accelerator=self.accelerator,
                seed=container["seed"],
                model=instantiate(model_config, AnomalibModule),
                datamodule=instantiate(container["data"], AnomalibDataModule),
                flat_cfg=flatten_dict(container),
                max_epochs=max_epochs,
                name=name,
            )


class FailingSerialRunner(SerialRunner):
    """Serial runner that raises :class:`BenchmarkJobFailedError` after the jobs if any failed."""

    def run(self, args: dict, prev_stage_results: PREV_STAGE_RESULT = None) -> Any:
        """Run every job, then raise if anomalib's runner reported a failure."""
        results = []
        failures: list[str] = []
        for job in self.generator(args, prev_stage_results):
            try:
                results.append(job.run())
            except Exception as error:
                failures.append(f"{type(job.model).__name__}: {type(error).__name__}: {error}")
        gathered = self.generator.job_class.collect(results)
        self.generator.job_class.save(gathered)
        if failures:
            raise BenchmarkJobFailedError("; ".join(failures))
        return gathered


class PluginBenchmark(Benchmark):
    """anomalib's benchmark pipeline with plugin class paths and a non-zero exit on failure."""

    @staticmethod
    def _setup_runners(args: dict) -> list[Runner]:
        accelerators = args["accelerator"] if isinstance(args["accelerator"], list) else [args["accelerator"]]
        return [FailingSerialRunner(PluginBenchmarkJobGenerator(accelerator)) for accelerator in accelerators]

    def run(self, args: Any = None) -> None:
        """Run the runners; unlike anomalib's pipeline, an exception propagates (and the command fails)."""
        pipeline_args = self._get_args(args)
        previous = None
        for runner in self._setup_runners(pipeline_args):
            job_args = pipeline_args.get(runner.generator.job_class.name)
            previous = runner.run(job_args or {}, previous)


def register() -> None:
    """Make anomalib's CLI ``benchmark`` subcommand use :class:`PluginBenchmark`."""
    from anomalib.cli import pipelines

    if pipelines.PIPELINE_REGISTRY is not None:
        pipelines.PIPELINE_REGISTRY["benchmark"] = PluginBenchmark
