"""Where this process trains: its rank among the data-parallel processes, its device, its cores.

`python -m oct_assets.ml.train` runs alone or as one of N processes started by `torchrun`
(which sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE). Under torchrun each process
(rank) drives one GPU, `cuda:LOCAL_RANK`, and talks to the others over NCCL; on CPU over gloo.
Alone, there is no process group and every collective here is a no-op, so one code path
serves both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from oct_assets.contracts.errors import OctMLError

log = logging.getLogger(__name__)

# Long enough for local rank 0 to fill the decode cache of a full data set while the other
# ranks wait at the barrier (NCCL's default is 10 minutes).
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Placement:
    """This process's rank and device; `world_size == 1` means training alone."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the model and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all ranks (float64, so counts stay exact)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank (for decisions only rank 0 can make)."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise OctMLError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; "cuda" without a GPU is an error.

    On CUDA, each local rank gets its own GPU, `cuda:LOCAL_RANK`.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise OctMLError("TrainConfig.device='cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise OctMLError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    return torch.device(name)


def placement(device: str) -> Placement:
    """This process's Placement from torchrun's environment (alone when it is unset)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if not 0 <= rank < world_size or not 0 <= local_rank < local_world_size:
        raise OctMLError(
            f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world_size}, "
            f"LOCAL_WORLD_SIZE={local_world_size}"
        )
    return Placement(
        rank, local_rank, world_size, local_world_size, resolve_device(device, local_rank)
    )


@contextmanager
def process_group(here: Placement) -> Iterator[None]:
    """The process group among the ranks for the duration (gloo on CPU, NCCL on CUDA).

    Nothing to do alone; a process group that the caller already set up is used and kept.
    """
    if not here.distributed or dist.is_initialized():
        yield
        return
    if here.device.type == "cuda":
        torch.cuda.set_device(here.device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=here.device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    log.info("rank %d of %d on %s", here.rank, here.world_size, here.device)
    try:
        yield
        # Leave together: a rank that tears gloo down while a peer is still exchanging can
        # abort ("terminate called without an active exception"), failing a finished job.
        dist.barrier()
    finally:
        dist.destroy_process_group()
