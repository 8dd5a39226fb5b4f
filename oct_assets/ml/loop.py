"""The training loop: a plain function over batches of row indices.

Read uint8 squares from the decode cache, augment, step AdamW under a warm-up + cosine
schedule, validate on held-out patients, keep the best epoch. `oct_assets.ml.train` is the
public entry point and CLI; this module holds the torch-heavy part.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oct_assets.ml.atomic import write_bytes
from oct_assets.ml.augment import augment
from oct_assets.ml.cache import DecodedImages, decoded_images
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.data import Sample, patient_split, read_sample, require_all_classes
from oct_assets.ml.decode import decode_rgb_float
from oct_assets.ml.errors import OctMLError
from oct_assets.ml.nets import build_net, min_image_size, to_input

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise OctMLError("TrainConfig.device='cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextmanager
def deterministic_torch(seed: int, threads: int, device: torch.device) -> Iterator[None]:
    """Seed torch and fix the thread count (restored afterwards); on CUDA, also force
    deterministic kernels.

    The thread count is part of determinism: CPU reductions may split work differently.
    The CPU kernels used here are deterministic already, and the first
    `use_deterministic_algorithms` call costs ~1.6 s of imports, so it is CUDA-only.
    """
    saved = (torch.get_num_threads(), None)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    if device.type == "cuda":
        saved = (saved[0], torch.are_deterministic_algorithms_enabled())
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        if saved[1] is not None:
            torch.use_deterministic_algorithms(saved[1])


class BatchReader:
    """Loads a batch of sample rows as a network input tensor, from the cache or the seed path."""

    def __init__(self, sample: Sample, images: DecodedImages | None, size: int, channels: int):
        self.sample, self.images, self.size, self.channels = sample, images, size, channels

    def __call__(self, rows: np.ndarray) -> Tensor:
        if self.images is not None:
            return to_input(torch.from_numpy(self.images.read(rows)), self.channels)
        # The seed's path: full JPEG decode to RGB float, every epoch.
        arrays = [decode_rgb_float(self.sample.path(int(r)), self.size) for r in rows]
        return to_input(torch.from_numpy(np.stack(arrays)), self.channels)


def predict_logits(
    net: nn.Module,
    reader: BatchReader,
    rows: np.ndarray,
    device: torch.device,
    batch_size: int,
    tta_flip: bool,
) -> Tensor:
    """Eval-mode logits for rows (in the given order), optionally averaged with the mirror."""
    net.eval()
    out = []
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(rows), batch_size):
            x = _to_device(reader(rows[start : start + batch_size]), device)
            logits = net(x).float()
            if tta_flip:
                logits = (logits + net(x.flip(-1)).float()) / 2
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0)


def train_model(
    sample_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    cache_dir: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Train on the sample's train split and write out_dir/model.pt and out_dir/model.json.

    model.pt is a plain state_dict (bit-identical for the same config, sample and machine);
    model.json records classes, input geometry, config, metrics and timings. Validation
    holds out whole patients; the best validation epoch's weights are kept (the last epoch
    when val_fraction is 0). Returns the metrics dict.

    Raises:
        OctMLError: empty class, undecodable image, bad image size or architecture.
    """
    started = time.perf_counter()
    sample = read_sample(Path(sample_dir))
    require_all_classes(sample, "train")
    device = resolve_device(config.device)
    threads = config.threads or os.cpu_count() or 1
    with deterministic_torch(config.seed, threads, device):
        net = build_net(config, len(sample.classes))  # checks image_size before any decoding
        images, decode_started = None, time.perf_counter()
        if config.data_path == "cached":
            images = decoded_images(
                sample, config.image_size, config.fit, cache_dir, config.decode_workers
            )
        decode_seconds = time.perf_counter() - decode_started
        reader = BatchReader(sample, images, config.image_size, net.in_channels)
        fit_rows, val_rows = patient_split(
            sample, sample.indices("train"), config.val_fraction, config.seed
        )
        result = _fit(net, reader, sample, fit_rows, val_rows, config, device, on_epoch)
    state = {k: v.detach().cpu().contiguous() for k, v in result.pop("state").items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_state_dict(state, out_dir / "model.pt")
    metrics = {
        **result,
        "device": device.type,
        "threads": threads,
        "n_fit": len(fit_rows),
        "n_val": len(val_rows),
        "decode_seconds": round(decode_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    meta = {
        "classes": list(sample.classes),
        "input": {"size": config.image_size, "channels": net.in_channels, "fit": config.fit},
        "architecture": config.architecture,
        "config": config.to_dict(),
        "metrics": metrics,
        "device": device.type,
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "train_seconds": metrics["train_seconds"],
        "images_per_second": metrics["images_per_second"],
        "torch_version": torch.__version__,
        "sample_salt": sample.salt,
        "min_image_size": min_image_size(config),
    }
    write_bytes(out_dir / "model.json", (json.dumps(meta, indent=2) + "\n").encode())
    return metrics


def _fit(
    net: nn.Module,
    reader: BatchReader,
    sample: Sample,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    on_epoch: Callable[[dict], None] | None,
) -> dict[str, Any]:
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net.to(device, memory_format=torch.channels_last)  # faster oneDNN/cuDNN kernels
    decay = [p for n, p in net.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in net.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    bs = min(config.batch_size, len(fit_rows))
    steps_per_epoch = len(fit_rows) // bs  # drop the ragged last batch: BatchNorm needs > 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    labels = torch.from_numpy(sample.labels)
    best: dict[str, Any] = {"score": None}
    history, seen, train_seconds = [], 0, 0.0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = rng.permutation(fit_rows)
        loss_sum, correct = 0.0, 0
        for step in range(steps_per_epoch):
            rows = np.sort(order[step * bs : (step + 1) * bs])  # sorted: sequential cache reads
            x = reader(rows).to(device, non_blocking=True)
            if config.augment:
                x = augment(x, gen)  # on the device; its random draws stay on the CPU
            x, y = _to_device(x, device), labels[rows].to(device)
            with _autocast(device, config.cpu_bf16):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise OctMLError(
                    f"training diverged (loss {loss.item()}) in epoch {epoch}; "
                    f"lower TrainConfig.learning_rate (now {config.learning_rate})"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.item() * len(rows)
            correct += int((logits.argmax(1) == y).sum())
        n_seen = steps_per_epoch * bs
        seen += n_seen
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        record: dict[str, Any] = {
            "epoch": epoch,
            "epochs": config.epochs,
            "train_loss": round(loss_sum / n_seen, 5),
            "train_accuracy": round(correct / n_seen, 5),
            "lr": sched.get_last_lr()[0],
            "seconds": round(epoch_seconds, 3),
            "images_per_second": round(n_seen / epoch_seconds, 2),
        }
        if len(val_rows):
            logits = predict_logits(net, reader, val_rows, device, bs, config.tta_flip)
            y = labels[val_rows]
            record["val_loss"] = round(F.cross_entropy(logits, y).item(), 5)
            record["val_accuracy"] = round((logits.argmax(1) == y).float().mean().item(), 5)
            score = (record["val_accuracy"], -record["val_loss"])
        else:
            score = (epoch,)  # no validation: the last epoch wins
        history.append(record)
        log.info("epoch %s", json.dumps(record))
        if on_epoch is not None:
            on_epoch(dict(record))
        if best["score"] is None or score > best["score"]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = {"score": score, "epoch": epoch, "state": state, "record": record}
        if config.patience and epoch - best["epoch"] >= config.patience:
            log.info("early stop: no better validation score for %d epochs", config.patience)
            break
    final = best["record"]
    return {
        "state": best["state"],
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "train_loss": final["train_loss"],
        "train_accuracy": final["train_accuracy"],
        "val_loss": final.get("val_loss"),
        "val_accuracy": final.get("val_accuracy"),
        "train_seconds": round(train_seconds, 3),
        "images_per_second": round(seen / train_seconds, 2) if train_seconds else 0.0,
        "history": history,
    }


def warmup_cosine(total_steps: int, warmup: float = 0.15) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from 0.1 over `warmup` of the run, then cosine to 0.01.

    Warm-up keeps a from-scratch net with BatchNorm stable at a high peak rate; ending low
    makes the last epoch a good one when there is no validation split to pick from.
    """
    n_warm = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < n_warm:
            return 0.1 + 0.9 * step / n_warm
        t = min(1.0, (step - n_warm) / max(1, total_steps - n_warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    return x.to(device, non_blocking=True, memory_format=torch.channels_last)


def _autocast(device: torch.device, cpu_bf16: bool = False):
    """fp16 autocast on CUDA; bf16 on the CPU only when asked (training only: inference
    stays fp32)."""
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)
    return torch.autocast("cuda", dtype=torch.float16)


def _save_state_dict(state: dict[str, Tensor], path: Path) -> None:
    """Serialise in memory first: saving straight to the temp file would embed the temp
    file's name in the archive and make otherwise identical models differ."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())
