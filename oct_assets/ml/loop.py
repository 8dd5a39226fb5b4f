"""The training loop: a plain function over batches of row indices.

Read uint8 squares from the decode cache, augment, step AdamW under a warm-up + cosine
schedule, validate on held-out patients, keep the best epoch; under torchrun, as one of
several data-parallel ranks (`train_model`). `oct_assets.ml.train` is the public entry point
and CLI; this module holds the torch-heavy part.
"""

from __future__ import annotations

import io
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.files import write_bytes
from oct_assets.contracts.formats import MODEL_PT
from oct_assets.contracts.model_info import TRAINING_ENV_HASH_VAR, InputGeometry, ModelInfo
from oct_assets.contracts.train_log import epoch_line, resuming_line
from oct_assets.ml import checkpoint
from oct_assets.ml.augment import training_batch
from oct_assets.ml.cache import decoded_images, usable_cpus
from oct_assets.ml.checkpoint import (
    CHECKPOINT_PT,
    Checkpointing,
    Progress,
    TrainingStopped,
    run_identity,
    stop_signals,
)
from oct_assets.ml.config import BF16_CPU_FLAGS, TrainConfig, cpu_has_bf16
from oct_assets.ml.data import Sample, patient_split, read_sample, require_all_classes
from oct_assets.ml.distributed import Placement, placement, process_group
from oct_assets.ml.nets import CLASSIFIER_BIAS, build_net, min_image_size
from oct_assets.ml.runtime import (
    BatchReader,
    autocast,
    deterministic_torch,
    predict_logits,
    to_device,
)

log = logging.getLogger(__name__)


def train_model(
    sample_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    cache_dir: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train on the sample's train split and write out_dir/model.pt and out_dir/model.json.

    model.pt is a plain state_dict (bit-identical for the same config, sample, machine and
    world size); model.json records classes, input geometry, config, metrics and timings.
    Validation holds out whole patients; the best validation epoch's weights are kept (the
    last epoch when val_fraction is 0). Returns the metrics dict.

    Under torchrun this is one of WORLD_SIZE data-parallel ranks (see `distributed`): local
    rank 0 of each node fills the decode cache while the others wait; each rank trains on
    its share of every global batch; rank 0 alone validates, calls `on_epoch` and writes
    out_dir. `config.batch_size` is the global batch, so a config means the same steps,
    learning rate schedule and images per step at any world size. BatchNorm statistics are
    per rank (over batch_size / world_size images): keep that at 16 or more.

    With `checkpoint_dir`, the run checkpoints there at every epoch end and, told to stop
    (`checkpoint.STOP_SIGNALS`), at the next step, then raises `TrainingStopped`; started again
    with a checkpoint there, it resumes from it, and its model.pt is byte-identical to an
    uninterrupted run's (model.json differs in timings and `resumed_from_*`).

    Raises:
        OctMLError: empty class, undecodable image, bad image size or architecture, a
            batch_size that the world size does not divide.
        CheckpointMismatchError: the checkpoint there was written for another sample,
            config, world size or device (before anything is decoded).
        TrainingStopped: told to stop; the checkpoint to resume from is written.
    """
    started = time.perf_counter()
    sample = read_sample(Path(sample_dir))
    require_all_classes(sample, "train")
    here = placement(config.device)
    if config.batch_size % here.world_size:
        raise OctMLError(
            f"TrainConfig.batch_size={config.batch_size} is the global batch and must be "
            f"a multiple of the world size {here.world_size}"
        )
    identity = run_identity(sample.salt, config, here.world_size, here.device.type)
    saved = None
    if checkpoint_dir is not None:
        saved = checkpoint.load(Path(checkpoint_dir) / CHECKPOINT_PT, identity)
    with process_group(here), stop_signals() if checkpoint_dir else nullcontext() as signals:
        threads = config.threads or max(1, usable_cpus() // here.local_world_size)
        with deterministic_torch(config.seed, threads, here.device):
            net = build_net(config, len(sample.classes))  # checks image_size before decoding
            decode_started = time.perf_counter()
            images = None
            if here.local_rank == 0:  # once per node; the node's other ranks wait, then open it
                images = decoded_images(
                    sample, config.image_size, config.fit, cache_dir, config.decode_workers
                )
            here.barrier()
            if images is None:
                images = decoded_images(sample, config.image_size, config.fit, cache_dir, 1)
            decode_seconds = time.perf_counter() - decode_started
            reader = BatchReader(images, net.in_channels)
            fit_rows, val_rows = patient_split(
                sample, sample.indices("train"), config.val_fraction, config.seed
            )
            ckpt = None
            if checkpoint_dir is not None:
                ckpt = Checkpointing(Path(checkpoint_dir) / CHECKPOINT_PT, identity, saved, signals)
            result = _fit(net, reader, sample, fit_rows, val_rows, config, here, on_epoch, ckpt)
        # Still inside stop_signals: a stop asked for now, after the last epoch's checkpoint,
        # has nothing left to save; the model is written and the trainer finishes (exit 0).
        state = result.pop("state")
        metrics = {
            **result,
            "device": here.device.type,
            "world_size": here.world_size,
            "threads": threads,
            "n_fit": len(fit_rows),
            "n_val": len(val_rows),
            "decode_seconds": round(decode_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
        }
        if not here.is_main:
            return metrics
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        shares = np.bincount(sample.labels[fit_rows], minlength=len(sample.classes)) / len(fit_rows)
        metrics["train_class_shares"] = [round(float(s), 6) for s in shares]
        if config.balanced_priors:
            state[CLASSIFIER_BIAS] = balanced_bias(state[CLASSIFIER_BIAS], shares)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _save_state_dict(state, out_dir / MODEL_PT)
        gpu = torch.cuda.get_device_name(here.device) if here.device.type == "cuda" else None
        ModelInfo(
            classes=tuple(sample.classes),
            input=InputGeometry(size=config.image_size, channels=net.in_channels, fit=config.fit),
            architecture=config.architecture,
            config=config.to_dict(),
            metrics=metrics,
            device=here.device.type,
            gpu_name=gpu,
            world_size=here.world_size,
            amp=metrics["amp"],
            epochs_run=metrics["epochs_run"],
            best_epoch=metrics["best_epoch"],
            train_seconds=metrics["train_seconds"],
            images_per_second=metrics["images_per_second"],
            torch_version=torch.__version__,
            sample_salt=sample.salt,
            min_image_size=min_image_size(config),
            environment=training_environment(),
        ).write(out_dir)
        return metrics


def balanced_bias(bias: Tensor, shares: np.ndarray) -> Tensor:
    """The classifier's bias minus log(class share): softmax then gives p(class | scan) / share,
    renormalised, the Bayes rule for equally common classes (`TrainConfig.balanced_priors`)."""
    if not (shares > 0).all():
        raise OctMLError(
            f"TrainConfig.balanced_priors needs every class among the trained scans (shares "
            f"{[round(float(s), 4) for s in shares]}): lower val_fraction or add scans"
        )
    return bias - torch.from_numpy(np.log(shares)).to(bias.dtype)


def training_environment() -> dict[str, Any] | None:
    """The environment that trained the network, when its launcher names it by a hash in
    `OCT_TRAINING_ENV_HASH` (a cluster job does): that hash and the running Python, torch and
    CUDA versions. None otherwise, and model.json then has no `environment`."""
    env_hash = os.environ.get(TRAINING_ENV_HASH_VAR)
    if not env_hash:
        return None
    return {
        "hash": env_hash,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def epoch_batches(
    fit_rows: np.ndarray, rng: np.random.Generator, batch_size: int, here: Placement
) -> list[np.ndarray]:
    """This rank's batches for one epoch: its strided share of each global batch.

    Every rank draws the same permutation from the same seeded `rng` (reshuffled each
    epoch), cuts it into global batches and keeps positions rank, rank + world_size, ...
    of each; the ragged last batch is dropped (BatchNorm needs more than one image). Alone,
    this is exactly the one-process order. Rows are sorted within a batch: sequential reads.
    """
    order = rng.permutation(fit_rows)
    steps = len(fit_rows) // batch_size
    return [
        np.sort(order[k * batch_size : (k + 1) * batch_size][here.rank :: here.world_size])
        for k in range(steps)
    ]


def _fit(
    net: nn.Module,
    reader: BatchReader,
    sample: Sample,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    config: TrainConfig,
    here: Placement,
    on_epoch: Callable[[dict], None] | None,
    ckpt: Checkpointing | None,
) -> dict[str, Any]:
    device, amp = here.device, config.amp and here.device.type == "cuda"
    if config.cpu_bf16 and device.type == "cpu" and cpu_has_bf16() is False:
        log.warning(
            "cpu_bf16: this CPU has no bf16 instructions (%s), so bf16 autocast is emulated and "
            "can be many times slower than float32 here; set cpu_bf16: false on this machine",
            " or ".join(BF16_CPU_FLAGS),
        )
    rng = np.random.default_rng(config.seed)  # the same shuffles on every rank
    gen = torch.Generator().manual_seed(config.seed + here.rank)  # augmentation differs per rank
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
    # The global batch, clamped to the fit set (kept a multiple of the world size).
    bs = min(config.batch_size, len(fit_rows) // here.world_size * here.world_size)
    if bs < 1:
        raise OctMLError(f"{len(fit_rows)} training images cannot feed {here.world_size} ranks")
    steps_per_epoch = len(fit_rows) // bs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(config.epochs * steps_per_epoch, config.warmup)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)  # fp16 gradients need loss scaling
    modules = {"net": net, "opt": opt, "sched": sched, "scaler": scaler}
    run, resumed = Progress(), (None, None)
    if ckpt is not None and ckpt.saved is not None:
        run = checkpoint.restore(ckpt.saved, here, modules, rng, gen)
        ckpt.saved, resumed = None, (run.epoch, run.step)  # free its tensors
        log.info("%s", resuming_line(ckpt.path, run.epoch, run.step))
    model = net
    if here.distributed:  # copies rank 0's weights to all, then averages gradients over ranks
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids)
    labels = torch.from_numpy(sample.labels)
    n_seen = steps_per_epoch * bs
    record = run.history[-1] if run.history else {}
    while not run.finished and run.epoch <= config.epochs:
        epoch, t0 = run.epoch, time.perf_counter() - run.elapsed
        shuffle = rng.bit_generator.state  # how this epoch's batches are drawn (again)
        model.train()
        batches = epoch_batches(fit_rows, rng, bs, here)
        for step in range(run.step, steps_per_epoch):
            if ckpt is not None and ckpt.stop_requested(here):
                run.step, run.elapsed = step, time.perf_counter() - t0
                checkpoint.write(ckpt, here, run, shuffle, modules, gen)
                ckpt.close()
                here.barrier()  # rank 0 has written: now every rank may leave
                raise TrainingStopped(ckpt.signals, ckpt.path, epoch, step)
            rows = batches[step]
            x = reader(rows).to(device, non_blocking=True)
            # on the device; the random draws stay on the CPU, so every device draws alike
            x = training_batch(x, gen, config.crop_size, config.augment)
            x, y = to_device(x, device), labels[rows].to(device)
            with autocast(device, amp, config.cpu_bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            run.loss_sum += loss.item() * len(rows)
            run.correct += int((logits.argmax(1) == y).sum())
        loss_sum, correct = here.sum([run.loss_sum, run.correct])
        if not math.isfinite(loss_sum):  # checked on every rank alike, so all stop together
            raise OctMLError(
                f"training diverged (loss {loss_sum}) in epoch {epoch}; "
                f"lower TrainConfig.learning_rate (now {config.learning_rate})"
            )
        run.seen += n_seen
        epoch_seconds = time.perf_counter() - t0
        run.train_seconds += epoch_seconds
        record = {
            "epoch": epoch,
            "epochs": config.epochs,
            "train_loss": round(loss_sum / n_seen, 5),
            "train_accuracy": round(correct / n_seen, 5),
            "lr": sched.get_last_lr()[0],
            "seconds": round(epoch_seconds, 3),
            "images_per_second": round(n_seen / epoch_seconds, 2),
        }
        stop = False
        if here.is_main:  # rank 0 validates the unwrapped net: no collectives in there
            if len(val_rows):
                logits = predict_logits(net, reader, val_rows, device, bs, config.tta_flip, amp)
                y = labels[val_rows]
                record["val_loss"] = round(F.cross_entropy(logits, y).item(), 5)
                record["val_accuracy"] = round((logits.argmax(1) == y).float().mean().item(), 5)
                score = (record["val_accuracy"], -record["val_loss"])
            else:
                score = (epoch,)  # no validation: the last epoch wins
            log.info("%s", epoch_line(record))
            if on_epoch is not None:
                on_epoch(dict(record))
            best = run.best
            if best["score"] is None or score > best["score"]:
                state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                run.best = {"score": score, "epoch": epoch, "state": state, "record": record}
            stop = bool(config.patience and epoch - run.best["epoch"] >= config.patience)
            if stop:
                log.info("early stop: no better validation score for %d epochs", config.patience)
        run.history.append(record)
        run.finished = here.broadcast_flag(stop)
        run.epoch, run.step, run.loss_sum, run.correct, run.elapsed = epoch + 1, 0, 0.0, 0, 0.0
        if ckpt is not None:
            checkpoint.write(ckpt, here, run, rng.bit_generator.state, modules, gen)
    if ckpt is not None:
        started = time.perf_counter()
        ckpt.close()  # the last checkpoint is on disk before the model is written
        run.checkpoint_seconds += time.perf_counter() - started
    best = run.best
    final = best.get("record", record)  # other ranks keep no best epoch: they write nothing
    return {
        "state": best.get("state"),
        "best_epoch": best.get("epoch"),
        "epochs_run": len(run.history),
        "train_loss": final["train_loss"],
        "train_accuracy": final["train_accuracy"],
        "val_loss": final.get("val_loss"),
        "val_accuracy": final.get("val_accuracy"),
        "train_seconds": round(run.train_seconds, 3),
        "images_per_second": round(run.seen / run.train_seconds, 2) if run.train_seconds else 0.0,
        "amp": amp,
        "resumed_from_epoch": resumed[0],
        "resumed_from_step": resumed[1],
        "checkpoint_seconds": round(run.checkpoint_seconds, 3),
        "history": run.history,
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


def _save_state_dict(state: dict[str, Tensor], path: Path) -> None:
    """Serialise in memory first: saving straight to the temp file would embed the temp
    file's name in the archive and make otherwise identical models differ."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())
