"""A portable TorchScript export of a model folder, and the check that it agrees with the loader.

`model.ts` maps a float32 batch (B, 1, S, S) of grayscale network inputs in [0, 1] to class
probabilities (B, n_classes), flip TTA included when the model was trained with it. It loads
with `torch.jit.load` alone; `model.json` rides along as an extra file (classes, input size
and fit). Decoding a scan into that input (`decode_gray`: JPEG draft mode, the model's fit) is
not part of the export.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from oct_assets.contracts.files import write_bytes
from oct_assets.contracts.formats import MODEL_JSON
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.cache import decoded_images
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.data import read_sample
from oct_assets.ml.predict import load_model
from oct_assets.ml.runtime import BatchReader, predict_logits

EXTRA_MODEL_JSON = "model.json"  # the extra file inside model.ts


class Probabilities(nn.Module):
    """Network input -> softmax probabilities, averaging the mirror image when `tta_flip`."""

    def __init__(self, net: nn.Module, tta_flip: bool) -> None:
        super().__init__()
        self.net, self.tta_flip, self.channels = net, tta_flip, net.in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x.expand(-1, self.channels, -1, -1)
        logits = self.net(x).float()
        if self.tta_flip:
            logits = (logits + self.net(x.flip(-1)).float()) / 2
        return torch.softmax(logits, 1)


def export_torchscript(model_dir: Path, out: Path) -> None:
    """Trace the model in `model_dir` at its input size and write it to `out` atomically."""
    net, info = load_model(Path(model_dir))
    config = TrainConfig.from_saved(info.config)
    size = info.input.size
    wrapper = Probabilities(net, config.tta_flip).eval()
    example = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    buf = io.BytesIO()
    extra = {EXTRA_MODEL_JSON: (Path(model_dir) / MODEL_JSON).read_text()}  # the file itself
    torch.jit.save(traced, buf, _extra_files=extra)
    write_bytes(Path(out), buf.getvalue())


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, ModelInfo]:
    """What a user does with torch alone: the module and its `model.json`."""
    extra = {EXTRA_MODEL_JSON: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), ModelInfo.from_text(extra[EXTRA_MODEL_JSON], f"{path}:{EXTRA_MODEL_JSON}")


def export_difference(model_dir: Path, ts_path: Path, sample_dir: Path) -> dict[str, Any]:
    """Max abs difference between the project's probabilities (the evaluation path: decode
    cache, `predict_logits`, softmax) and `model.ts`'s, on the sample's test split."""
    net, info = load_model(Path(model_dir))
    config = TrainConfig.from_saved(info.config)
    size, fit = info.input.size, info.input.fit
    sample = read_sample(Path(sample_dir))
    rows = sample.indices("test")
    images = decoded_images(sample, size, fit, None, config.decode_workers)
    reader = BatchReader(images, net.in_channels)
    cpu = torch.device("cpu")
    ours = torch.softmax(predict_logits(net, reader, rows, cpu, 32, config.tta_flip), 1)
    module, _ = load_torchscript(ts_path)
    theirs = []
    with torch.inference_mode():
        for start in range(0, len(rows), 32):
            pixels = torch.from_numpy(images.read(rows[start : start + 32]))
            theirs.append(module(pixels.float().div(255).unsqueeze(1)))
    diff = (ours - torch.cat(theirs)).abs().max().item() if len(rows) else 0.0
    agree = bool(np.array_equal(ours.argmax(1).numpy(), torch.cat(theirs).argmax(1).numpy()))
    return {"max_abs_diff": float(diff), "n_images": len(rows), "same_classes": agree}
