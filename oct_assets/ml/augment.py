"""Batch augmentation for OCT B-scans, in torch (no torchvision on CPU).

OCT geometry: left/right mirroring is anatomically plausible (left vs right eye), an upside
down retina is not, so there is no vertical flip. Random crops, small zooms, shifts and tilts
mimic scan placement; gamma, brightness and contrast jitter mimic scanner gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (symmetric around identity)."""

    max_zoom: float = 0.10  # scale in [1 - z, 1 + z]
    max_shift: float = 0.08  # fraction of the side
    max_rotate_deg: float = 8.0
    max_stretch: float = 0.2  # extra horizontal scale in [exp(-s), exp(s)]: other fields of view
    max_gamma: float = 0.3  # gamma in [exp(-g), exp(g)]
    max_contrast: float = 0.2
    max_brightness: float = 0.08


def training_batch(x: Tensor, gen: torch.Generator, crop: int, style: str) -> Tensor:
    """A training batch's random crop (`crop` 0: none) and augmentation (`style` "affine",
    "light" or "none"; see TrainConfig.augment). With "none" nothing is random: the network
    takes the centre crop itself."""
    if style == "none":
        return x
    x = random_crop(x, gen, crop)
    return augment(x, gen) if style == "affine" else flip_and_jitter(x, gen)


def augment(x: Tensor, gen: torch.Generator, p: AugmentParams = AugmentParams()) -> Tensor:
    """Randomly transform a float batch (B, C, H, W) in [0, 1]; draws come only from `gen`.

    All random numbers are drawn on the CPU generator, so the same seed gives the same
    batch on every device.
    """
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> Tensor:
        return (torch.rand(b, generator=gen) * (hi - lo) + lo).to(x.device)

    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0).to(x.device)
    scale = uniform(1 - p.max_zoom, 1 + p.max_zoom)
    stretch = torch.exp(uniform(-p.max_stretch, p.max_stretch))
    angle = uniform(-p.max_rotate_deg, p.max_rotate_deg) * (math.pi / 180)
    tx = uniform(-p.max_shift, p.max_shift) * 2  # affine_grid coordinates span [-1, 1]
    ty = uniform(-p.max_shift, p.max_shift) * 2
    gamma = torch.exp(uniform(-p.max_gamma, p.max_gamma))
    contrast = uniform(1 - p.max_contrast, 1 + p.max_contrast)
    bright = uniform(-p.max_brightness, p.max_brightness)

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip / stretch, -sin, tx], 1),
            torch.stack([sin * flip / stretch, cos, ty], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _contrast_brightness(x.clamp(0, 1) ** gamma.view(b, 1, 1, 1), contrast, bright)


def random_crop(x: Tensor, gen: torch.Generator, size: int) -> Tensor:
    """A random size x size square of each image (the batch unchanged when size is 0 or the
    side): shifts the scan by up to the margin; prediction takes the centre (`nets.centre_crop`)."""
    b, _, h, w = x.shape
    if not size or size >= min(h, w):
        return x
    tops = torch.randint(0, h - size + 1, (b,), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (b,), generator=gen).tolist()
    return torch.stack(
        [
            x[i, :, t : t + size, u : u + size]
            for i, (t, u) in enumerate(zip(tops, lefts, strict=True))
        ]
    )


def flip_and_jitter(
    x: Tensor, gen: torch.Generator, max_brightness: float = 0.1, max_contrast: float = 0.2
) -> Tensor:
    """The light augmentation: horizontal mirroring, brightness and contrast jitter only."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    contrast = (1 + (torch.rand(b, generator=gen) * 2 - 1) * max_contrast).to(x.device)
    bright = ((torch.rand(b, generator=gen) * 2 - 1) * max_brightness).to(x.device)
    return _contrast_brightness(x, contrast, bright)


def _contrast_brightness(x: Tensor, contrast: Tensor, bright: Tensor) -> Tensor:
    """Scale each image's deviation from its mean by `contrast`, add `bright`, clip to [0, 1]."""
    b = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(b, 1, 1, 1) + mean + bright.view(b, 1, 1, 1)
    return x.clamp(0, 1)
