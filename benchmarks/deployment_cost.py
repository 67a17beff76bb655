# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""What each shipped CPU config costs on a line-side CPU, against PatchCore, in one run.

Every shipped CPU config (``configs/*_cpu*.yaml``), OneNIP's ``lineside`` preset and PatchCore at coreset ratios
0.1 and 0.01 (``FastPatchcore``, Lite2 blocks 2 + 4, as in the harness) is built on the shared classes' training
images (bottle, hazelnut_toy, magnetic_tile; the package's default split), exported to OpenVINO FP32 at 256 x 256 as
``anomalib export`` does, and timed at batch 1 over ``--images`` test images, one call each (median and 95th
percentile), after 10 warm-up calls. Beside it: the IR's size on disk (``.xml`` + ``.bin``) and the peak resident
memory of a fresh process that only loads the IR and infers.

The graph -- its prompt pool, patch memory or memory bank included -- depends on the data, not on how long a network
trained, nor on which rows a coreset keeps: the networks train ``--epochs`` epochs here, coresets are random rows of
the coreset's size (``--exact-coreset`` selects them as training does), and the accuracy column is that config's
figure as measured by the harness run named beside it (``benchmarks/results/README.md``).

Usage:
    python benchmarks/deployment_cost.py [--output benchmarks/results/deployment_cost] [--images 200] [--epochs 1]
        [--exact-coreset]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from deployment import datamodule_for, export, model_arguments, model_megabytes, peak_inference_mb, train
from invocation import data_root, write_results
from torch.nn import functional as F  # noqa: N812

from anomalib_pnpt.coreset import FastKCenterGreedy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PATCHCORE = {"backbone": "tf_efficientnet_lite2", "layers": ["blocks.2", "blocks.4"], "pre_trained": True}
# name -> (class path and arguments, or a shipped config file; where its accuracy was measured, model row or None)
MODELS = {
    "configs/onenip_memory_cpu.yaml": (
        REPO / "configs/onenip_memory_cpu.yaml",
        "shipped_cpu/per_class_metrics.csv",
        None,
    ),
    "configs/onenip_cpu.yaml": (REPO / "configs/onenip_cpu.yaml", "unified_comparison_cpu/results.csv", "OneNIP"),
    "configs/pnpt_cpu.yaml": (
        REPO / "configs/pnpt_cpu.yaml",
        "unified_memory_cpu/session31/PNPT-residual-prior-stream-restoration-selected/per_class_metrics.csv",
        None,
    ),
    "configs/pnpt_cpu_lineside.yaml": (
        REPO / "configs/pnpt_cpu_lineside.yaml",
        "shipped_cpu/results_PNPT-lineside.csv",
        "PNPT-lineside",
    ),
    "OneNip(preset=lineside)": (("anomalib_pnpt.OneNip", {"preset": "lineside", "pre_trained": True}), None, None),
    "PatchCore-0.1": (
        ("anomalib_pnpt.FastPatchcore", {**PATCHCORE, "coreset_sampling_ratio": 0.1}),
        "unified_memory_cpu/results.csv",
        "PatchCore-0.1",
    ),
    "PatchCore-0.01": (
        ("anomalib_pnpt.FastPatchcore", {**PATCHCORE, "coreset_sampling_ratio": 0.01}),
        "unified_comparison_cpu/results.csv",
        "PatchCore-0.01",
    ),
}
ACCURACY = ("image_AUROC", "pixel_AUROC", "pixel_AP", "PRO")


def recorded_accuracy(source: str | None, row: str | None) -> dict[str, float]:
    """Mean accuracy (percent) over the shared classes as the named harness run recorded it; NaN if none."""
    if source is None:
        return dict.fromkeys(ACCURACY, float("nan")) | {"accuracy from": "not measured"}
    table = pd.read_csv(RESULTS / source)
    table = table[table["model"] == row] if row is not None else table
    mean = table[table["category"] == "mean"].iloc[0]
    return {key: round(100 * float(mean[key]), 2) for key in ACCURACY} | {"accuracy from": source.split("/")[0]}


def cpu_name() -> str:
    """The CPU model as ``lscpu`` names it, and whether it has AMX / AVX512-BF16 (costs differ by model)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    extras = [flag for flag in ("amx_tile", "avx512_bf16") if f" {flag}" in info]
    return f"{name} ({', '.join(extras) or 'no AMX / AVX512-BF16'})"


def random_rows_coreset() -> None:
    """Make every coreset a random draw of the coreset's size, instead of the greedy k-center selection.

    The exported graph searches its memory exhaustively, so its size, memory and latency depend on the number of rows,
    not on which rows: the same figures in minutes instead of the ~1.5 h the exact selections take here.
    """

    def select(sampler: FastKCenterGreedy) -> list[int]:
        return torch.randperm(sampler.n_observations)[: sampler.coreset_size].tolist()

    FastKCenterGreedy.select_coreset_idxs = select


def latency(path: Path, images: torch.Tensor) -> tuple[float, float]:
    """Median and 95th-percentile milliseconds of one OpenVINO FP32 call per image at batch 1."""
    import openvino as ov

    from anomalib_pnpt.deploy import read_model

    core = ov.Core()
    compiled = core.compile_model(read_model(path, core), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    dimension = compiled.input(0).partial_shape[0]
    batch = dimension.get_length() if dimension.is_static else 1  # a graph that pins its batch: per image of it
    arrays = [images[start : start + batch].numpy() for start in range(0, len(images) - batch + 1, batch)]
    for array in arrays[:10]:
        compiled(array)
    times = []
    for array in arrays:
        start = time.perf_counter()
        compiled(array)
        times.append(1000 * (time.perf_counter() - start) / batch)
    return float(np.median(times)), float(np.percentile(times, 95))


def main() -> int:
    """Build, export and time every model; writes results.md / results.csv."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root(__file__))
    parser.add_argument("--output", type=Path, default=RESULTS / "deployment_cost")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--exact-coreset", action="store_true", help="select coresets greedily, as trained models do")
    args = parser.parse_args()
    if not args.exact_coreset:
        random_rows_coreset()
    if not (args.data / "industrial").is_dir():
        print(f"SKIPPED: {args.data / 'industrial'} not found (set ANOMALIB_PNPT_DATA or --data).")
        return 0
    torch.set_num_threads(2)
    datamodule = datamodule_for(args.data / "industrial")
    images = torch.cat([batch.image for batch in datamodule.test_dataloader()])[: args.images]
    images = F.interpolate(images, size=(256, 256), mode="bilinear", antialias=True)  # the exported input size
    names = args.models.split(",")
    exported: dict[str, Path] = {}
    for name in names:  # build and export everything first, then time each IR alone
        built = MODELS[name][0]
        class_path, arguments = model_arguments(built, args.data) if isinstance(built, Path) else built
        folder = args.output / "jobs" / name.replace("/", "_")
        model, fit_seconds = train(class_path, arguments, datamodule, args.epochs, folder)
        exported[name] = export(model, folder / "export", None, datamodule)
        print(f"{name}: built ({fit_seconds:.0f} s, sharing the cores or not) and exported", flush=True)
        del model
    rows = []
    for name in names:
        path = exported[name]
        median, p95 = latency(path, images)
        rows.append(
            {
                "model": name,
                "ms median": round(median, 1),
                "ms p95": round(p95, 1),
                "size MB": round(model_megabytes(path), 1),
                "peak RSS MB": round(peak_inference_mb(path)),
            }
            | recorded_accuracy(*MODELS[name][1:])
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "results.csv", index=False)
    coresets = "exact" if args.exact_coreset else "random rows of the coreset's size"
    note = (
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, "
        f"{len(images)} test images of the shared classes, one call each; coresets: {coresets}. Accuracy: mean image "
        "AUROC / pixel AUROC / pixel AP / PRO over the shared classes, as measured with the same config by the harness "
        "run named (never by this run)."
    )
    title = "Deployment cost: OpenVINO FP32, batch 1, 256 px, this CPU"
    write_results(args.output, title, note, table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
