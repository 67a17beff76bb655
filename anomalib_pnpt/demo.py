# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The README's main command: one model over all embedded demo classes, per-class table, anomaly-map pictures.

Generates the demo dataset (:mod:`anomalib_pnpt.data.demo`, no download), trains ONE model on the normal
images of all its classes (PNPT by default, PaDiM with ``--model padim``) with the offline ImageNet
EfficientNet-Lite2 backbone, tests it, prints the
per-class table and writes the overlays under ``<output>/<Model>/demo/.../images/<class>/``.

Usage:
    ``python -m anomalib_pnpt.demo [--output results/demo] [--model pnpt|padim] [--max-epochs N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalib.engine import Engine

from anomalib_pnpt.backbones import load_offline_weights_into
from anomalib_pnpt.data import MultiClassMVTecAD, make_demo_dataset
from anomalib_pnpt.evaluation import PerClassEvaluation


def build_demo_model(name: str) -> object:
    """The demo's model, with offline pretrained weights (``pnpt`` or ``padim``)."""
    if name == "pnpt":
        from anomalib_pnpt import Pnpt

        return Pnpt(preset="lineside", image_size=128, training={"learning_rate": 1e-3})
    if name == "padim":
        from anomalib.models import Padim

        model = Padim(
            backbone="tf_efficientnet_lite2",
            layers=["blocks.1", "blocks.2", "blocks.4"],
            pre_trained=False,
            n_features=100,
        )
        load_offline_weights_into(model)
        return model
    msg = f"Unknown demo model '{name}'."
    raise ValueError(msg)


def main(argv: list[str] | None = None) -> Path:
    """Run the demo and return the directory holding the per-class table and the pictures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("results/demo"))
    parser.add_argument("--model", default="pnpt", choices=["pnpt", "padim"])
    parser.add_argument("--max-epochs", type=int, default=None, help="default: 20 for pnpt, 1 for padim")
    args = parser.parse_args(argv)
    root = make_demo_dataset(args.output / "data" / "demo")
    datamodule = MultiClassMVTecAD(root=root, train_batch_size=16, eval_batch_size=16, num_workers=0)
    model = build_demo_model(args.model)
    evaluation = PerClassEvaluation()
    max_epochs = args.max_epochs or (20 if args.model == "pnpt" else 1)
    engine = Engine(
        default_root_dir=args.output,
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[evaluation],
        check_val_every_n_epoch=max_epochs,
    )
    engine.fit(model, datamodule=datamodule)
    engine.test(model, datamodule=datamodule)
    run_dir = Path(engine.trainer.default_root_dir)
    print(f"\nPer-class table: {run_dir / 'per_class_metrics.csv'}")
    print(f"Anomaly-map pictures: {run_dir / 'images'}/<class>/test/<defect>/")
    return run_dir


if __name__ == "__main__":
    main()
