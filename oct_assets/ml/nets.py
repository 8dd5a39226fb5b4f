"""Networks. All end in global average pooling and one linear layer, so a class activation
map is just the classifier's weights applied to the last feature maps (`features`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from oct_assets.contracts.errors import OctMLError
from oct_assets.ml.config import ARCHITECTURES, TrainConfig

CLASSIFIER_BIAS = "classifier.bias"  # every net ends in `self.classifier` (one nn.Linear)


class CompactNet(nn.Module):
    """Small grayscale CNN: a stride-2 stem, then stages of (stride-2 conv, conv), GAP, linear.

    Strided convolutions instead of max-pooling keep the cost ~3x lower on a CPU for the same
    depth. Input is float in [0, 1], shape (B, 1, H, W); each image is standardised inside
    the network, so scanner gain and the train/predict paths can never disagree on scaling.
    """

    in_channels = 1

    def __init__(
        self,
        n_classes: int,
        width: int = 16,
        blocks: int = 4,
        dropout: float = 0.1,
        pool_power: float = 1.0,
        input_size: int = 0,
    ):
        super().__init__()
        self.pool_power, self.input_size = pool_power, input_size
        layers: list[nn.Module] = [*_conv_bn_relu(1, width, stride=2)]
        c = width
        for i in range(1, blocks):
            out = width * min(2**i, 8)
            layers += [*_conv_bn_relu(c, out, stride=2), *_conv_bn_relu(out, out)]
            c = out
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, n_classes)

    def features(self, x: Tensor) -> Tensor:
        x = centre_crop(x, self.input_size)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return self.body((x - mean) / (std + 1e-3))

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x).float()
        if self.pool_power == 1.0:
            pooled = f.mean(dim=(2, 3))
        else:  # generalised mean: leans toward the max, so one small lesion still counts
            pooled = generalised_mean(f, self.pool_power)
        return self.classifier(self.dropout(pooled))


class PlainNet(nn.Module):
    """VGG-style grayscale CNN: blocks of two 3x3 conv + BN + ReLU with a max-pool between
    blocks, GAP, dropout, linear. The first conv has stride 2: with a full-resolution first
    block a CPU training step takes ~4x as long (docs/training.md, "Real scans: the preset").

    Input is float in [0, 1]; a BatchNorm without weights standardises it with dataset
    statistics (not per image, so brightness and contrast jitter still teach something).
    Inputs larger than `input_size` are centre-cropped to it: training takes random crops
    (`augment.random_crop`), prediction feeds the whole decoded square.
    """

    in_channels = 1

    def __init__(
        self,
        n_classes: int,
        width: int = 24,
        blocks: int = 5,
        dropout: float = 0.3,
        input_size: int = 0,
    ):
        super().__init__()
        self.input_size = input_size
        layers: list[nn.Module] = [nn.BatchNorm2d(1, affine=False)]
        c = 1
        for i in range(blocks):
            out = min(width * 2**i, 256)
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [*_conv_bn_relu(c, out, stride=1 if i else 2), *_conv_bn_relu(out, out)]
            c = out
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(centre_crop(x, self.input_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.features(x).float().mean(dim=(2, 3))))


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The central size x size square of a batch (unchanged when size is 0 or the side)."""
    h, w = x.shape[-2:]
    if not size or (h, w) == (size, size):
        return x
    top, left = centre_corner(h, w, size)
    return x[..., top : top + size, left : left + size]


def centre_corner(h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left corner of the central size x size square of an h x w image: where
    `centre_crop` cuts, and where the CAMs of what it kept are placed back."""
    return (h - size) // 2, (w - size) // 2


def generalised_mean(f: Tensor, p: float) -> Tensor:
    """(mean f^p)^(1/p) over H, W, computed in log space: the direct form underflows to 0
    for small activations at large p, and its gradient there is infinite."""
    logf = f.clamp(min=1e-6).log().flatten(2)
    return ((torch.logsumexp(p * logf, dim=2) - math.log(logf.shape[2])) / p).exp()


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SeedNet(nn.Module):
    """Port of the seed's Keras network (valid padding, Keras BatchNorm constants).

    Keras: Conv2D(64,3,relu) Conv2D(64,3,relu) MaxPool Dropout(0.25) Conv2D(128,3,relu)
    Conv2D(128,3,relu) MaxPool Dropout(0.25) Conv2D(256,3,relu) BatchNormalization
    GlobalAveragePooling2D Dense(n, softmax). Input RGB in [0, 1] (the seed's rescale=1/255);
    softmax lives in the loss.
    """

    in_channels = 3

    def __init__(self, n_classes: int, dropout: float = 0.25):
        super().__init__()
        relu = nn.ReLU
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 3),
            relu(),
            nn.Conv2d(64, 64, 3),
            relu(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nn.Conv2d(64, 128, 3),
            relu(),
            nn.Conv2d(128, 128, 3),
            relu(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nn.Conv2d(128, 256, 3),
            relu(),
            nn.BatchNorm2d(256, eps=1e-3, momentum=0.01),
        )
        self.classifier = nn.Linear(256, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def min_image_size(config: TrainConfig) -> int:
    """Smallest supported square input: the last feature map must be at least 1x1."""
    if config.architecture == "seed":
        return 24  # 2 valid convs, pool, 2 valid convs, pool, 1 valid conv
    return 2**config.blocks


def build_net(config: TrainConfig, n_classes: int) -> nn.Module:
    """Construct the configured network; raises OctMLError naming a bad setting."""
    if config.architecture not in ARCHITECTURES:
        raise OctMLError(
            f"unknown architecture {config.architecture!r}; valid: {', '.join(ARCHITECTURES)}"
        )
    least, seen = min_image_size(config), config.crop_size or config.image_size
    if seen < least:
        name = "crop_size" if config.crop_size else "image_size"
        raise OctMLError(
            f"{name}={seen} is too small for architecture {config.architecture!r}: "
            f"minimum is {least}"
        )
    if config.architecture == "seed":
        if config.crop_size:
            raise OctMLError('crop_size is not supported by architecture "seed"; set it to 0')
        return SeedNet(n_classes)
    if config.architecture == "plain":
        return PlainNet(
            n_classes, config.width, config.blocks, config.dropout, input_size=config.crop_size
        )
    return CompactNet(
        n_classes,
        config.width,
        config.blocks,
        config.dropout,
        pool_power=config.pool_power,
        input_size=config.crop_size,
    )


def to_input(images: Tensor, in_channels: int) -> Tensor:
    """uint8 or [0, 1] float (B, H, W) or (B, 1, H, W) -> float (B, in_channels, H, W)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[1] != in_channels:
        x = x.expand(-1, in_channels, -1, -1)
    return x
