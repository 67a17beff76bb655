# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Synthetic anomalies for OneNIP's restoration stream and refiner (Gao, ECCV 2024, Sec. 3.3).

PNPT's restoration option (``Pnpt(restoration_weight=...)``, not in its paper) uses the same generator.

Every training image gets a defective copy and the pixel mask of what was changed:

- with probability ``cutpaste_probability``: CutPaste (a rectangle of 2-15 % of the image, aspect ratio
  0.3-3.3, cut from one place and pasted at another) or CutPaste-scar (a thin rotated strip, 2-16 x
  10-25 px, angle within +-45 degrees), half each, with a colour jitter of the pasted pixels;
- otherwise DRAEM-style: a Perlin-noise blob mask (anomalib's ``generate_perlin_noise``, thresholded at
  0.5) filled with a texture blended into the image with ``beta ~ U(blend_range)``:
  ``x' = (1 - m) x + m ((1 - beta) t + beta x)``. Textures come from a DTD-layout folder (every image
  below it, e.g. ``dtd/images/<texture>/*.jpg``) loaded ONCE at the training size and kept in memory as
  uint8, so generation never touches the disk; without a folder, coloured Perlin noise is the texture.

Everything is done with whole-tensor operations on already-loaded images (the batch's own device), so
generation costs a few milliseconds per image — far less than the backbone pass the synthetic copy needs
anyway (``benchmarks/synthetic_anomaly_speed.py`` measures both). Images come in and go out NORMALISED
(the pre-processor's mean and std); the mask is 1 exactly where pixels were altered.

Example:
    >>> import torch
    >>> generator = SyntheticAnomalyGenerator(texture_dir=None)
    >>> images = torch.rand(4, 3, 64, 64)
    >>> augmented, masks = generator(images)
    >>> augmented.shape, masks.shape, bool((masks.flatten(1).sum(1) > 0).all())
    (torch.Size([4, 3, 64, 64]), torch.Size([4, 1, 64, 64]), True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from anomalib.data.utils.generators.perlin import generate_perlin_noise
from PIL import Image
from torchvision.transforms.v2 import functional as TF  # noqa: N812

logger = logging.getLogger(__name__)

TEXTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class SyntheticAnomalyGenerator:
    """Make a defective copy of every image in a batch, with its mask.

    Args:
        texture_dir: Folder of texture images (DTD layout; searched recursively); ``None``: noise textures.
        mean: Channel mean of the images' normalisation.
        std: Channel standard deviation of the images' normalisation.
        cutpaste_probability: Share of CutPaste(-scar) anomalies; the rest are Perlin/texture anomalies.
        blend_range: Range of the texture blend factor ``beta`` (OneNIP: ``(0, 0.8)``).
        max_textures: Textures kept in memory at most (the first ones in sorted path order).
        grey_texture_probability: Probability that a texture is replaced by its luminance (grey), so that a
            grey part's synthetic defect cannot be told apart by colour alone (not in the paper).
    """

    def __init__(
        self,
        texture_dir: str | Path | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        cutpaste_probability: float = 0.5,
        blend_range: tuple[float, float] = (0.0, 0.8),
        max_textures: int = 256,
        grey_texture_probability: float = 0.0,
    ) -> None:
        self.texture_dir = Path(texture_dir) if texture_dir else None
        if self.texture_dir is not None and not self.texture_dir.is_dir():
            msg = f"Texture folder {self.texture_dir} does not exist (give a DTD-layout folder or None)."
            raise FileNotFoundError(msg)
        self.mean = torch.tensor(list(mean)).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std)).view(1, 3, 1, 1)
        self.cutpaste_probability = cutpaste_probability
        self.blend_range = blend_range
        self.max_textures = max_textures
        self.grey_texture_probability = grey_texture_probability
        self._textures: torch.Tensor | None = None

    # ------------------------------------------------------------------ textures
    def textures(self, height: int, width: int) -> torch.Tensor | None:
        """The texture bank ``(N, 3, H, W)`` uint8 at this size (loaded on first use), or ``None``."""
        if self.texture_dir is None:
            return None
        if self._textures is None or self._textures.shape[-2:] != (height, width):
            paths = sorted(p for p in self.texture_dir.rglob("*") if p.suffix.lower() in TEXTURE_EXTENSIONS)
            if not paths:
                msg = f"No texture images ({', '.join(TEXTURE_EXTENSIONS)}) below {self.texture_dir}."
                raise FileNotFoundError(msg)
            textures = []
            for path in paths[: self.max_textures]:
                with Image.open(path) as image:
                    tensor = TF.pil_to_tensor(image.convert("RGB"))
                tensor = TF.resize(tensor, [max(height, width)], antialias=True)
                textures.append(TF.center_crop(tensor, [height, width]))
            self._textures = torch.stack(textures)
            logger.info("Loaded %d anomaly textures from %s", len(textures), self.texture_dir)
        return self._textures

    def _texture(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """One random texture ``(3, H, W)`` in ``[0, 1]``, randomly flipped/rotated."""
        bank = self.textures(height, width)
        if bank is None:  # coloured Perlin noise
            channels = [generate_perlin_noise(height, width, device=device) for _ in range(3)]
            return (torch.stack(channels) * 0.5 + 0.5).clamp(0, 1)
        texture = bank[int(torch.randint(len(bank), (1,)))].to(device).float() / 255
        if torch.rand(1) < 0.5:
            texture = texture.flip(-1)
        if torch.rand(1) < 0.5:
            texture = texture.flip(-2)
        if self.grey_texture_probability > 0 and torch.rand(1) < self.grey_texture_probability:
            luminance = (texture * texture.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(dim=0)
            texture = luminance.expand(3, -1, -1)
        return texture

    # ------------------------------------------------------------------ masks
    @staticmethod
    def perlin_mask(height: int, width: int, device: torch.device, threshold: float = 0.5) -> torch.Tensor:
        """A non-empty Perlin blob mask ``(H, W)`` (noise above ``threshold``; random scale per axis)."""
        for _ in range(10):
            noise = generate_perlin_noise(height, width, device=device)
            mask = noise > threshold
            if mask.any():
                break
        else:  # rare: keep the top 2 % of the last noise field
            mask = noise >= noise.flatten().quantile(0.98)
        if torch.rand(1) < 0.5:
            mask = mask.flip(-1)
        if height == width and torch.rand(1) < 0.5:
            mask = mask.transpose(0, 1)
        return mask

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return float(torch.empty(1).uniform_(low, high))

    def cutpaste_mask(self, height: int, width: int, scar: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        """Destination mask ``(H, W)`` of a CutPaste patch and the ``(dy, dx)`` shift from its source."""
        rows = torch.arange(height, dtype=torch.float32)[:, None]
        cols = torch.arange(width, dtype=torch.float32)[None, :]
        if scar:
            thickness = int(torch.randint(2, 17, (1,)))
            length = int(torch.randint(10, 26, (1,)))
            angle = math.radians(self._uniform(-45, 45))
            radius = math.ceil(math.hypot(thickness, length) / 2) + 1
            centres = [
                (int(torch.randint(radius, height - radius, (1,))), int(torch.randint(radius, width - radius, (1,))))
                for _ in range(2)
            ]
            (cy, cx), (sy, sx) = centres
            along = (rows - cy) * math.cos(angle) + (cols - cx) * math.sin(angle)
            across = -(rows - cy) * math.sin(angle) + (cols - cx) * math.cos(angle)
            mask = (along.abs() <= length / 2) & (across.abs() <= thickness / 2)
            return mask, (cy - sy, cx - sx)
        area = self._uniform(0.02, 0.15) * height * width
        aspect = math.exp(self._uniform(math.log(0.3), math.log(1 / 0.3)))
        patch_h = max(1, min(height - 1, round(math.sqrt(area * aspect))))
        patch_w = max(1, min(width - 1, round(math.sqrt(area / aspect))))
        sy, dy = (int(v) for v in torch.randint(0, height - patch_h + 1, (2,)))
        sx, dx = (int(v) for v in torch.randint(0, width - patch_w + 1, (2,)))
        mask = (rows >= dy) & (rows < dy + patch_h) & (cols >= dx) & (cols < dx + patch_w)
        return mask, (dy - sy, dx - sx)

    # ------------------------------------------------------------------ generation
    def _colour_jitter(self, pixels: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation jitter (+-20 %) of an image ``(3, H, W)`` in [0, 1]."""
        pixels = pixels * self._uniform(0.8, 1.2)
        mean = pixels.mean()
        pixels = (pixels - mean) * self._uniform(0.8, 1.2) + mean
        gray = pixels.mean(dim=0, keepdim=True)
        return ((pixels - gray) * self._uniform(0.8, 1.2) + gray).clamp(0, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(defective copies, masks (B, 1, H, W) float)`` of normalised images ``(B, 3, H, W)``."""
        device = images.device
        mean, std = self.mean.to(device), self.std.to(device)
        pixels = images * std + mean
        height, width = images.shape[-2:]
        outputs, masks = [], []
        for image in pixels:
            if torch.rand(1) < self.cutpaste_probability:
                mask, shift = self.cutpaste_mask(height, width, scar=bool(torch.rand(1) < 0.5))
                mask = mask.to(device)
                source = self._colour_jitter(torch.roll(image, shifts=shift, dims=(-2, -1)))
                altered = torch.where(mask, source, image)
            else:
                mask = self.perlin_mask(height, width, device)
                beta = self._uniform(*self.blend_range)
                texture = self._texture(height, width, device)
                altered = torch.where(mask, (1 - beta) * texture + beta * image, image)
            outputs.append(altered)
            masks.append(mask)
        altered_images = (torch.stack(outputs) - mean) / std
        return altered_images, torch.stack(masks).unsqueeze(1).float()
