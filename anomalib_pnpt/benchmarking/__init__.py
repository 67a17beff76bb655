# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Benchmarking: the unified/separate harness and the plugin-aware ``anomalib benchmark`` pipeline."""

from anomalib_pnpt.benchmarking.harness import BenchmarkJob, build_model, run_job, summarise, write_results

__all__ = ["BenchmarkJob", "build_model", "run_job", "summarise", "write_results"]
