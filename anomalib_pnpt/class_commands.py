# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-pnpt add-class`` / ``remove-class``: change a trained model's classes in its checkpoint.

A new product on the line gets its own class from a folder of its normal images in seconds, without training
(:meth:`~anomalib_pnpt.models.prompted_module.PromptedAnomalyModule.add_class`); the result is a new checkpoint
that ``anomalib test / predict / export --ckpt_path`` use as any other.

Example:
    ``anomalib-pnpt add-class --ckpt_path model.ckpt --name gasket --images line3/gasket/good --output new.ckpt``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

COMMANDS = ("add-class", "remove-class")


def load_checkpoint_model(path: str | Path, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """The PNPT or OneNIP model of a Lightning checkpoint (the kind read from its hyper-parameters), in eval mode.

    Args:
        path: Checkpoint file written by training (or by this command).
        **overrides: Constructor arguments replacing the checkpoint's (e.g. ``prompts_per_class``).

    Returns:
        ``(model, checkpoint dict)``.
    """
    from anomalib_pnpt import OneNip, Pnpt

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model_class = OneNip if "prompt_mode" in checkpoint.get("hyper_parameters", {}) else Pnpt
    return model_class.load_from_checkpoint(path, map_location="cpu", **overrides).eval(), checkpoint


def save_checkpoint_model(model: Any, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` with the model's current weights, buffers and class names to ``path``.

    Args:
        model: The changed model.
        checkpoint: The checkpoint it was loaded from (epoch, hyper-parameters, optimiser state are kept).
        path: Output file.
    """
    updated = dict(checkpoint)
    updated["state_dict"] = model.state_dict()
    model.on_save_checkpoint(updated)  # the class names
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(updated, path)


def main(arguments: list[str] | None = None) -> None:
    """Parse ``add-class`` / ``remove-class`` and run it; prints one JSON summary line."""
    parser = argparse.ArgumentParser(prog="anomalib-pnpt", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-class", help="add (or replace) a class from a folder of its normal images")
    add.add_argument("--images", required=True, help="folder of normal images of the class")
    add.add_argument("--calibration_share", type=float, default=0.2, help="images held out to calibrate")
    remove = commands.add_parser("remove-class", help="remove a class")
    for command in (add, remove):
        command.add_argument("--ckpt_path", required=True)
        command.add_argument("--name", required=True, help="class name")
        command.add_argument("--output", default=None, help="new checkpoint (default: <ckpt>_<command>_<name>.ckpt)")
    args = parser.parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    model, checkpoint = load_checkpoint_model(args.ckpt_path)
    if args.command == "add-class":
        summary = model.add_class(args.name, args.images, calibration_share=args.calibration_share)
    else:
        model.remove_class(args.name)
        summary = {"class": args.name, "removed": True}
    default = Path(args.ckpt_path).with_name(f"{Path(args.ckpt_path).stem}_{args.command}_{args.name}.ckpt")
    output = Path(args.output) if args.output else default
    save_checkpoint_model(model, checkpoint, output)
    summary.update(classes=list(model.prompt_categories), checkpoint=str(output), seconds=time.perf_counter() - start)
    print(json.dumps(summary))
