# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""One training step of each CPU config's network under the settings the training-cost issue names, interleaved.

The network's forward + backward + AdamW step on backbone features of real training images (the backbone is
frozen and cached in training, so it is not part of the step). The settings' steps alternate so that all see the
same machine load:
- ``fp32``: float32, the default (PyTorch's fused ``scaled_dot_product_attention`` kernel, which
  ``nn.MultiheadAttention`` calls without attention weights, and every core as torch thread);
- ``bf16``: bfloat16 autocast (Lightning's ``precision="bf16-mixed"``);
- ``math_attention``: the unfused attention (``sdpa_kernel(SDPBackend.MATH)``);
- ``one_thread``: ``torch.set_num_threads(1)``.
Also reports how far each setting's loss is from the float32 loss.

Usage:
    python benchmarks/step_precision.py [--steps 8] [--output benchmarks/results/step_precision]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from invocation import command_line, data_root
from torch.nn.attention import SDPBackend, sdpa_kernel

from anomalib_pnpt.data.dataset import read_rgb_image
from anomalib_pnpt.model_factory import build_model


def _images(root: Path, size: int, count: int = 8) -> torch.Tensor:
    files = sorted((root / "bottle" / "train" / "good").glob("*.png"))[: count // 2]
    files += sorted((root / "magnetic_tile" / "train" / "good").glob("*.png"))[: count - len(files)]
    images = torch.stack([read_rgb_image(f) for f in files])
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


SETTINGS = ("fp32", "bf16", "math_attention", "one_thread")


def _forward_context(setting: str) -> contextlib.AbstractContextManager:
    """Autocast or the attention kernel of a setting, for the forward pass (backward follows its choices)."""
    if setting == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if setting == "math_attention":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _step(setting: str, optimizer: torch.optim.Optimizer, loss_of: Callable[[], torch.Tensor]) -> tuple[float, float]:
    threads = torch.get_num_threads()
    if setting == "one_thread":
        torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        with _forward_context(setting):
            loss = loss_of()
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    optimizer.zero_grad()
    return seconds, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/step_precision"))
    args = parser.parse_args()
    shared = data_root(__file__)
    results = {"command": command_line()}
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    results["cpu"] = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    results["bf16_flags"] = sorted({f for f in lscpu.split() if f in {"amx_bf16", "avx512_bf16"}})
    for config_path in ("configs/pnpt_cpu.yaml", "configs/onenip_cpu.yaml"):
        config = yaml.safe_load(Path(config_path).read_text())
        init_args = {
            k: v.replace("../shared/data", str(shared)) if isinstance(v, str) else v
            for k, v in config["model"]["init_args"].items()
        }
        torch.manual_seed(0)
        module = build_model(config["model"]["class_path"], init_args)
        images = module.pre_processor.transform(_images(shared / "industrial", module.hparams["image_size"]))
        class_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        module.build_prompt_pool([(images, class_ids, [f"{i}.png" for i in range(8)])], num_classes=2)
        module.train()
        network = module.model
        with torch.no_grad():
            features = network.extract_features(images)
        optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-5)

        def loss_of(
            net: torch.nn.Module = network,
            feats: object = features,
            ids: torch.Tensor = class_ids,
            size: torch.Size = images.shape[-2:],
        ) -> torch.Tensor:
            if isinstance(feats, list):  # PNPT: a list of maps
                return net.training_loss(feats)
            # OneNIP without the restoration stream (its backbone pass is timed in the epoch profile)
            return net.training_loss(feats, ids, size)["loss"]

        step = functools.partial(_step, optimizer=optimizer, loss_of=loss_of)
        for setting in SETTINGS:  # warm-up (allocations, kernel selection)
            step(setting)
        times = {setting: [] for setting in SETTINGS}
        losses = {setting: [] for setting in SETTINGS}
        for _ in range(args.steps):
            for setting in SETTINGS:
                seconds, loss = step(setting)
                times[setting].append(seconds)
                losses[setting].append(loss)
        median = {setting: sorted(times[setting])[len(times[setting]) // 2] for setting in SETTINGS}
        results[type(module).__name__] = {
            **{f"median_step_s_{setting}": median[setting] for setting in SETTINGS},
            **{f"speedup_{setting}": median["fp32"] / median[setting] for setting in SETTINGS[1:]},
            **{
                f"mean_abs_loss_difference_{setting}": sum(
                    abs(a - b) for a, b in zip(losses["fp32"], losses[setting], strict=True)
                )
                / args.steps
                for setting in SETTINGS[1:]
            },
            "mean_loss_fp32": sum(losses["fp32"]) / args.steps,
        }
        print(json.dumps(results[type(module).__name__]), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "step_precision.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
