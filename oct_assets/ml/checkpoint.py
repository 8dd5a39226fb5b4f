"""Training checkpoints: everything a run needs to carry on exactly where it stopped.

One file, `<checkpoint dir>/checkpoint.pt`, replaced atomically at every epoch end and when
the trainer is told to stop (SIGTERM, SIGUSR2, SIGINT): weights, optimiser, schedule,
GradScaler, the RNG states of every rank (python, numpy, torch, CUDA, the augmentation
generator), the position (epoch and step, with the shuffle generator as it was at the start of
that epoch, so the epoch's batches are drawn again alike), the best epoch's weights and the
history. A run resumed from it writes a `model.pt` byte-identical to an uninterrupted run's.

It records what it was written for (`run_identity`: sample salt, config, world size, device);
a checkpoint written for anything else is refused, naming the file and what differs, and never
loaded. It holds tensors and plain containers only, read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from oct_assets.contracts.errors import DamagedFileError, OctMLError
from oct_assets.contracts.files import write_bytes
from oct_assets.contracts.train_log import stopped_line
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.distributed import Placement

CHECKPOINT_PT = "checkpoint.pt"
FORMAT = 1  # bump when the payload's keys change: an older checkpoint is then refused
# Signals that ask a checkpointing trainer to stop at the next step: SIGTERM (kill, Slurm's
# scancel and time limit, torchrun), SIGUSR2 (Slurm's `--signal=USR2@<seconds>` warning),
# SIGINT (Dagster Pipes forwards a run's termination as SIGINT; Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class CheckpointMismatchError(OctMLError):
    """A checkpoint exists but was written for another run; names the file and what differs."""


class TrainingStopped(Exception):
    """The trainer was told to stop by a signal and left a checkpoint to resume from."""

    def __init__(self, signals: list[int], path: Path, epoch: int, step: int):
        # Under torchrun a rank may stop because another was signalled: then say SIGTERM.
        self.signum, self.path = signals[0] if signals else signal.SIGTERM, path
        why = signal.Signals(self.signum).name if signals else "another rank's signal"
        super().__init__(stopped_line(why, epoch, step, path))


@dataclass
class Progress:
    """Where a run stands, besides the states of its modules and RNGs."""

    epoch: int = 1  # the epoch in progress (or the next one, at step 0)
    step: int = 0  # steps of it already taken
    loss_sum: float = 0.0  # this rank's sums over those steps
    correct: int = 0
    elapsed: float = 0.0  # seconds spent on those steps
    seen: int = 0  # images trained on in completed epochs
    train_seconds: float = 0.0
    checkpoint_seconds: float = 0.0  # taken from training by checkpoints (in no epoch's)
    finished: bool = False  # early-stopped: nothing is left to train
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"score": None})  # rank 0's


@dataclass
class Checkpointing:
    """A checkpointing run's file, what it is written for, the checkpoint it resumes from
    (from `load`, or None), and the stop signals received so far (from `stop_signals`)."""

    path: Path
    identity: dict[str, Any]
    saved: dict[str, Any] | None
    signals: list[int]
    # Writes the serialised checkpoint to disk (write, fsync, rename: I/O without the GIL)
    # while the next epoch trains; one write at a time, in order.
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    writing: Future[None] | None = None

    def stop_requested(self, here: Placement) -> bool:
        """Whether any rank was told to stop (a collective under torchrun: ranks stop alike)."""
        return bool(here.sum([float(len(self.signals))])[0])

    def flush(self) -> None:
        """Wait until the last checkpoint is on disk; re-raise the error its write met."""
        writing, self.writing = self.writing, None
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """Flush, and end the writer thread."""
        try:
            self.flush()
        finally:
            self.writer.shutdown()


def run_identity(
    sample_salt: str, config: TrainConfig, world_size: int, device: str
) -> dict[str, Any]:
    """What a checkpoint must have been written for to be resumed: the same sample, config,
    world size (ranks split each batch and hold their own RNGs) and device type."""
    return {
        "format": FORMAT,
        "sample_salt": sample_salt,
        "world_size": world_size,
        "device": device,
        "config": config.to_dict(),
    }


def rank_rngs(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """This process's RNG states: python, numpy's global one, torch's (dropout), CUDA's, and
    the augmentation generator."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()  # no arrays: weights_only
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "augment": gen.get_state(),
    }


def restore_rngs(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    """Set every RNG of this process as `rank_rngs` saw it."""
    random.setstate(state["python"])
    np_state = {**state["numpy"], "state": dict(state["numpy"]["state"])}
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    gen.set_state(state["augment"])


def gather(obj: Any, here: Placement) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (None elsewhere); a collective, so every rank calls it."""
    if not here.distributed:
        return [obj]
    out = [None] * here.world_size if here.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def write(
    ckpt: Checkpointing,
    here: Placement,
    progress: Progress,
    shuffle: dict[str, Any],
    modules: dict[str, Any],
    gen: torch.Generator,
) -> None:
    """Checkpoint the run at `progress` (a collective: every rank calls it; rank 0 writes).

    `shuffle` is the shuffle generator's state at the start of `progress.epoch`; `modules`
    maps "net", "opt", "sched" and "scaler" to objects with a `state_dict`. The state is
    serialised here and written in the background (`Checkpointing.flush` waits for it); the
    file is replaced atomically: a kill at any point leaves the previous checkpoint or this
    one. The time this takes from training is added to `progress.checkpoint_seconds`.
    """
    started = time.perf_counter()
    mine = {"rngs": rank_rngs(gen, here.device), "loss_sum": progress.loss_sum}
    ranks = gather({**mine, "correct": progress.correct}, here)
    if here.is_main:
        states = {name: m.state_dict() for name, m in modules.items()}
        best = {k: v for k, v in progress.best.items() if k != "state"}
        if progress.step == 0 and best.get("epoch") == progress.epoch - 1:
            best["state"] = states["net"]  # the same tensors: torch.save stores them once
        else:
            best["state"] = progress.best.get("state")
        shared = {f.name: getattr(progress, f.name) for f in fields(progress)}
        del shared["loss_sum"], shared["correct"]  # per rank: in `ranks`
        payload = {"identity": ckpt.identity, **states, "shuffle": shuffle, "ranks": ranks}
        buf = io.BytesIO()
        torch.save({**payload, "progress": {**shared, "best": best}}, buf)
        ckpt.flush()
        ckpt.path.parent.mkdir(parents=True, exist_ok=True)
        ckpt.writing = ckpt.writer.submit(write_bytes, ckpt.path, buf.getvalue())
    progress.checkpoint_seconds += time.perf_counter() - started


def restore(
    payload: dict[str, Any],
    here: Placement,
    modules: dict[str, Any],
    rng: np.random.Generator,
    gen: torch.Generator,
) -> Progress:
    """Load a checkpoint (from `load`) into the modules and RNGs; return where the run stands."""
    for name, module in modules.items():
        module.load_state_dict(payload[name])
    rng.bit_generator.state = payload["shuffle"]
    mine = payload["ranks"][here.rank]
    restore_rngs(mine["rngs"], gen, here.device)
    shared = dict(payload["progress"])
    if not here.is_main:
        shared["best"] = {"score": None}  # rank 0 alone keeps the best epoch
    return Progress(**shared, loss_sum=mine["loss_sum"], correct=mine["correct"])


def load(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` when it was written for `identity`; None when there is none.

    Raises:
        CheckpointMismatchError: written for another sample, config, world size or device.
        DamagedFileError: not a checkpoint this project wrote.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write SIGKILLed midway
        stale.unlink(missing_ok=True)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise DamagedFileError(
            f"checkpoint {path} is damaged ({type(exc).__name__}: {exc}); delete it to start over"
        ) from exc
    saved = payload.get("identity") if isinstance(payload, dict) else None
    if not isinstance(saved, dict):
        raise DamagedFileError(f"checkpoint {path} records no run identity; delete it")
    differences = _differences(saved, identity)
    if differences:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for another run ({'; '.join(differences)}); "
            "refusing to resume from it: delete it, or train with its settings"
        )
    return payload


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if key == "config":
            a, b = saved.get(key) or {}, now.get(key) or {}
            out += [
                f"config.{k}: {a.get(k)!r} there, {b.get(k)!r} now"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        elif saved.get(key) != now.get(key):
            out.append(f"{key}: {saved.get(key)!r} there, {now.get(key)!r} now")
    return out


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While inside, `STOP_SIGNALS` only note their number in the yielded list (the loop stops
    at the next step and checkpoints); the previous handlers come back afterwards.

    Signal handlers belong to the main thread; elsewhere nothing is installed.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in STOP_SIGNALS
    }
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_stop_signals() -> None:
    """For a trainer process whose model is written: a stop asked for from now on (a time-limit
    warning just after the last epoch) has nothing left to checkpoint, so the process finishes
    and exits 0 rather than die by the signal and have its job requeued to redo nothing."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
