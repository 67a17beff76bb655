# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Reading a test image the way the models' tests feed it: RGB, square, ``(1, 3, size, size)`` in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_image_tensor(path: Path, size: int = 128) -> torch.Tensor:
    """The image at ``path`` resized to ``size x size`` as a float batch of one."""
    image = Image.open(path).convert("RGB").resize((size, size))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 255
