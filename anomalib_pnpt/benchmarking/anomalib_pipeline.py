# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib benchmark`` that accepts plugin class paths and fails when a job fails.

anomalib's benchmark pipeline resolves models with ``get_model`` (an allow-list of ``anomalib.models``
modules) and datamodules by class NAME inside ``anomalib.data``, so ``class_path: anomalib_pnpt.Pnpt`` or
``anomalib_pnpt.data.MultiClassMVTecAD`` is rejected; and its runners log a failed job and still exit 0.

:class:`PluginBenchmark` reuses anomalib's ``BenchmarkJob`` (same Engine run, same result columns) with a
job generator that imports any class path that is an ``AnomalibModule`` / ``AnomalibDataModule``
subclass, and re-raises the first failure. :func:`register` puts it into anomalib's CLI pipeline registry;
the ``anomalib-pnpt`` command (anomalib's CLI with the plugin registered) calls it, so
``anomalib-pnpt benchmark --config cfg.yaml`` is ``anomalib benchmark`` with our models.

Example:
    >>> from anomalib_pnpt.benchmarking.anomalib_pipeline import register
    >>> register()
    >>> from anomalib.cli.pipelines import PIPELINE_REGISTRY
    >>> PIPELINE_REGISTRY["benchmark"].__name__
    'PluginBenchmark'
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from typing import Any

from anomalib.data import AnomalibDataModule, get_datamodule
from anomalib.models import AnomalibModule, get_model
from anomalib.pipelines import Benchmark
from anomalib.pipelines.benchmark.generator import BenchmarkJobGenerator
from anomalib.pipelines.benchmark.job import BenchmarkJob
from anomalib.pipelines.components.base import Runner
from anomalib.pipelines.components.runners import SerialRunner
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict
from anomalib.pipelines.types import PREV_STAGE_RESULT
from anomalib.utils.config import flatten_dict


class BenchmarkJobFailedError(RuntimeError):
    """Raised when any benchmark job fails (anomalib only logs it)."""


def instantiate(config: dict[str, Any], base: type) -> Any:
    """Instantiate ``{"class_path": ..., "init_args": {...}}`` if the class path is a subclass of ``base``.

    Dotted paths outside anomalib are imported directly; bare names and anomalib paths go through anomalib's
    own resolvers, so every config anomalib accepts is still accepted.

    Args:
        config: The ``model`` or ``data`` entry of a benchmark grid point.
        base: ``AnomalibModule`` or ``AnomalibDataModule``.

    Returns:
        The instance.

    Raises:
        TypeError: If the class is not a subclass of ``base``.
    """
    class_path = str(config["class_path"])
    if "." not in class_path or class_path.startswith("anomalib."):
        return get_model(config) if base is AnomalibModule else get_datamodule(config)
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        msg = f"{class_path} is not a {base.__name__} subclass."
        raise TypeError(msg)
    return cls(**dict(config.get("init_args") or {}))


class PluginBenchmarkJobGenerator(BenchmarkJobGenerator):
    """anomalib's benchmark job generator, resolving plugin class paths too."""

    def generate_jobs(
        self, args: dict, previous_stage_result: PREV_STAGE_RESULT
    ) -> Generator[BenchmarkJob, None, None]:
        """Yield one anomalib ``BenchmarkJob`` per grid point."""
        del previous_stage_result
        for container in get_iterator_from_grid_dict(args):
            yield BenchmarkJob(
                accelerator=self.accelerator,
                seed=container["seed"],
                model=instantiate(container["model"], AnomalibModule),
                datamodule=instantiate(container["data"], AnomalibDataModule),
                flat_cfg=flatten_dict(container),
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
