"""Score scan files with a model folder: class probabilities and a CAM overlay per scan.

Scans are decoded exactly as for training and evaluation (`decode_gray` at the model's input
size and fit) and run through the same inference path (`predict_logits`, flip TTA as trained).
A file that is not a usable scan gets a reason instead of scores; it never stops the others.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from oct_assets.dataset.validity import header_problem
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.decode import decode_gray
from oct_assets.ml.errors import ImageDecodeError
from oct_assets.ml.nets import to_input
from oct_assets.ml.plots import overlay
from oct_assets.ml.predict import class_activation_maps, load_model
from oct_assets.ml.runtime import predict_logits

log = logging.getLogger(__name__)

BATCH = 32


@dataclass
class Score:
    """The outcome for one scan: probabilities (in class order) or the reason there are none."""

    probabilities: list[float] | None = None
    predicted: str | None = None
    reason: str | None = None
    image: np.ndarray | None = None  # uint8 network input square, for the overlay
    cam: np.ndarray | None = None  # CAM of the predicted class, the image's shape


def decode_scan(path: Path, size: int, fit: str) -> tuple[np.ndarray | None, str | None]:
    """The model input square of a scan, or the reason it cannot be had: the project's one
    scan rule (`dataset.validity`, whose header part every training image passed too), then
    the decode itself."""
    problem = header_problem(path)
    if problem is not None:
        return None, problem
    try:
        return decode_gray(path, size, fit), None
    except ImageDecodeError as exc:
        return None, f"cannot decode ({exc.__cause__ or exc})"


def score_files(model_dir: Path, paths: list[Path], cams: bool = True) -> list[Score]:
    """Score every path with the model in `model_dir`; one `Score` per path, in order."""
    net, meta = load_model(Path(model_dir))
    config = TrainConfig.from_saved(meta["config"])
    classes = list(meta["classes"])
    size, fit = meta["input"]["size"], meta["input"]["fit"]
    scores = [Score() for _ in paths]
    good: list[int] = []
    pixels: list[np.ndarray] = []
    for i, path in enumerate(paths):
        image, reason = decode_scan(Path(path), size, fit)
        if reason is not None:
            scores[i].reason = reason
        else:
            good.append(i)
            pixels.append(image)
    if not good:
        return scores
    images = np.stack(pixels)

    def reader(rows: np.ndarray) -> torch.Tensor:
        return to_input(torch.from_numpy(images[rows]), net.in_channels)

    rows = np.arange(len(good))
    logits = predict_logits(net, reader, rows, torch.device("cpu"), BATCH, config.tta_flip)
    probs = torch.softmax(logits, 1).numpy().astype(np.float64)
    for k, i in enumerate(good):
        p = probs[k]
        scores[i].probabilities = [float(x) for x in p]
        scores[i].predicted = classes[int(p.argmax())]
        scores[i].image = images[k]
    if cams:
        for start in range(0, len(good), BATCH):
            maps = class_activation_maps(net, images[start : start + BATCH])
            for j, cam in enumerate(maps):
                k = start + j
                scores[good[k]].cam = cam[int(probs[k].argmax())]
    log.info("scored %d of %d files (%d refused)", len(good), len(paths), len(paths) - len(good))
    return scores


def overlay_png(score: Score) -> bytes:
    """The scan with the CAM of its predicted class over it, as PNG bytes."""
    if score.image is None or score.cam is None:
        raise ValueError("only a scored scan with a CAM has an overlay")
    buf = io.BytesIO()
    overlay(score.image, score.cam).save(buf, format="PNG")
    return buf.getvalue()
