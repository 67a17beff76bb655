# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Greedy coreset selection on the unified three-class PatchCore bank: anomalib's ``KCenterGreedy`` vs ours.

Builds the memory bank exactly as a unified ``Patchcore`` (Lite2 ``blocks.2`` + ``blocks.4``, the backbone's
own normalisation, the training images of every class minus the 10 % held out for calibration) fills it,
then times :class:`anomalib_pnpt.coreset.FastKCenterGreedy` over the selection at each ratio (or its first
``--fast-steps`` centres) and anomalib's ``KCenterGreedy`` over its first ``--reference-steps`` centres (each
of its steps is the same full pass over the bank, so its time for N centres is N times that per-step time),
and checks that both select the same first indices.

Usage:
    python benchmarks/coreset_speed.py [--ratios 0.01,0.1] [--reference-steps 20] [--fast-steps N]
        [--bank-cache FILE] [--output DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from anomalib.engine import Engine
from anomalib.models.components import KCenterGreedy
from invocation import command_line, data_root
from lightning.pytorch import seed_everything

from anomalib_pnpt.backbones import load_offline_weights_into
from anomalib_pnpt.coreset import FastKCenterGreedy, FastPatchcore
from anomalib_pnpt.data import MultiClassMVTecAD
from anomalib_pnpt.pre_processing import BackbonePreProcessor


class _CollectedError(Exception):
    """Raised to stop the fit once the bank is filled (before PatchCore's own coreset selection)."""


class _CollectOnly(FastPatchcore):
    def fit(self) -> None:
        raise _CollectedError


def build_bank(root: str) -> torch.Tensor:
    seed_everything(0)
    model = _CollectOnly(
        backbone="tf_efficientnet_lite2",
        layers=["blocks.2", "blocks.4"],
        pre_trained=False,
        pre_processor=BackbonePreProcessor("tf_efficientnet_lite2", 256),
    )
    load_offline_weights_into(model)
    datamodule = MultiClassMVTecAD(root=root, train_batch_size=16, eval_batch_size=16, num_workers=2)
    engine = Engine(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=1)
    with contextlib.suppress(_CollectedError):
        engine.fit(model, datamodule=datamodule)
    return torch.vstack(model.model.embedding_store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None)
    parser.add_argument("--ratios", default="0.01,0.1")
    parser.add_argument("--reference-steps", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/coreset_speed"))
    parser.add_argument(
        "--fast-steps",
        type=int,
        default=None,
        help="time only the first N centres of ours (default: the whole coreset)",
    )
    parser.add_argument("--bank-cache", type=Path, default=None, help="reuse / keep the bank in this .pt file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = args.root or str(data_root(__file__) / "industrial")
    start = time.perf_counter()
    if args.bank_cache is not None and args.bank_cache.is_file():
        bank = torch.load(args.bank_cache)
    else:
        bank = build_bank(root)
        if args.bank_cache is not None:
            torch.save(bank, args.bank_cache)
    rows = {"command": command_line(), "bank_rows": bank.shape[0], "bank_dims": bank.shape[1]}
    rows["bank_seconds"] = time.perf_counter() - start
    rows["cpu"] = (
        subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
        .stdout.split("Model name:")[-1]
        .splitlines()[0]
        .strip()
        if platform.system() == "Linux"
        else platform.processor()
    )
    rows["threads"] = torch.get_num_threads()
    rows["cpus"] = os.cpu_count()
    for ratio in [float(r) for r in args.ratios.split(",")]:
        torch.manual_seed(0)
        np.random.seed(0)
        reference = KCenterGreedy(bank, sampling_ratio=ratio)
        reference.model.fit(bank)
        reference.features = reference.model.transform(bank)
        first = torch.randint(high=reference.n_observations, size=(1,)).squeeze()
        selected, idx = [int(first)], first
        t0 = time.perf_counter()
        for _ in range(args.reference_steps):
            reference.update_distances(cluster_center=idx)
            idx = reference.get_new_idx()
            reference.min_distances.scatter_(0, idx.unsqueeze(0).unsqueeze(1), 0.0)
            selected.append(int(idx))
        per_step = (time.perf_counter() - t0) / args.reference_steps
        del reference
        torch.manual_seed(0)
        np.random.seed(0)
        fast = FastKCenterGreedy(bank, sampling_ratio=ratio)
        full_size = fast.coreset_size
        if args.fast_steps is not None:
            fast.coreset_size = min(full_size, args.fast_steps)
        t0 = time.perf_counter()
        indices = fast.select_coreset_idxs()
        fast_seconds = time.perf_counter() - t0
        rows[f"ratio_{ratio}"] = {
            "coreset_size": full_size,
            "centres_timed": len(indices),
            "anomalib_seconds_per_step": per_step,
            "anomalib_seconds_estimated_for_timed_centres": per_step * len(indices),
            "fast_seconds_for_timed_centres": fast_seconds,
            "speedup_over_timed_centres": per_step * len(indices) / fast_seconds,
            "share_of_rows_computed": fast.rows_computed / (bank.shape[0] * (len(indices) - 1)),
            "same_first_indices": indices[: len(selected)] == selected,
            "compared_indices": len(selected),
        }
        print(json.dumps(rows[f"ratio_{ratio}"]), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "coreset_speed.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
