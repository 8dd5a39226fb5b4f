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

from oct_assets.contracts.errors import ImageDecodeError
from oct_assets.dataset.inbox import read_scan_file
from oct_assets.dataset.validity import header_problem_bytes
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.decode import decode_gray
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


def decode_scan(data: bytes, size: int, fit: str) -> tuple[np.ndarray | None, str | None]:
    """The model input square of a scan's bytes, or the reason it cannot be had: the project's
    one scan rule (`dataset.validity`, whose header part every training image passed too), then
    the decode itself. Bytes, not a path: what is decoded is what was hashed."""
    problem = header_problem_bytes(data)
    if problem is not None:
        return None, problem
    try:
        return decode_gray(io.BytesIO(data), size, fit), None
    except ImageDecodeError as exc:
        return None, f"cannot decode ({exc.__cause__ or exc})"


class Scorer:
    """A model folder loaded once; scores batches of decoded scans (the inbox streams through
    it, so only one batch of input squares is ever held)."""

    def __init__(self, model_dir: Path) -> None:
        self.net, info = load_model(Path(model_dir))
        self.tta_flip = TrainConfig.from_saved(info.config).tta_flip
        self.classes = list(info.classes)
        self.size, self.fit = info.input.size, info.input.fit

    def decode(self, data: bytes) -> tuple[np.ndarray | None, str | None]:
        """`decode_scan` at this model's input size and fit."""
        return decode_scan(data, self.size, self.fit)

    def score(self, images: list[np.ndarray], cams: bool = True) -> list[Score]:
        """One `Score` with probabilities (and the CAM of the predicted class) per image."""
        scores = [Score() for _ in images]
        if not images:
            return scores
        stacked = np.stack(images)
        net = self.net

        def reader(rows: np.ndarray) -> torch.Tensor:
            return to_input(torch.from_numpy(stacked[rows]), net.in_channels)

        rows = np.arange(len(images))
        logits = predict_logits(net, reader, rows, torch.device("cpu"), BATCH, self.tta_flip)
        probs = torch.softmax(logits, 1).numpy().astype(np.float64)
        for k, p in enumerate(probs):
            scores[k].probabilities = [float(x) for x in p]
            scores[k].predicted = self.classes[int(p.argmax())]
            scores[k].image = stacked[k]
        if cams:
            for start in range(0, len(images), BATCH):
                maps = class_activation_maps(net, stacked[start : start + BATCH])
                for j, cam in enumerate(maps):
                    scores[start + j].cam = cam[int(probs[start + j].argmax())]
        return scores


def score_files(model_dir: Path, paths: list[Path], cams: bool = True) -> list[Score]:
    """Score every path with the model in `model_dir`; one `Score` per path, in order.

    Each file is read once (`read_scan_file`: regular files only, never blocking), then hashed
    and decoded from those bytes, exactly as the inbox does.
    """
    scorer = Scorer(model_dir)
    scores = [Score() for _ in paths]
    good: list[int] = []
    pixels: list[np.ndarray] = []
    for i, path in enumerate(paths):
        read = read_scan_file(Path(path))
        image, reason = (None, read.reason) if read.data is None else scorer.decode(read.data)
        if image is None:
            scores[i].reason = reason
        else:
            good.append(i)
            pixels.append(image)
    for i, s in zip(good, scorer.score(pixels, cams), strict=True):
        scores[i] = s
    log.info("scored %d of %d files (%d refused)", len(good), len(paths), len(paths) - len(good))
    return scores


def overlay_png(score: Score) -> bytes:
    """The scan with the CAM of its predicted class over it, as PNG bytes."""
    if score.image is None or score.cam is None:
        raise ValueError("only a scored scan with a CAM has an overlay")
    buf = io.BytesIO()
    overlay(score.image, score.cam).save(buf, format="PNG")
    return buf.getvalue()
