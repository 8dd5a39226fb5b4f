"""How the ML core runs torch: seeded and thread-pinned, batches read from the decode cache
onto the device (channels-last), autocast where it is asked for, and eval-mode logits with
optional flip TTA. Shared by training, evaluation, scoring new scans and the export."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from oct_assets.ml.cache import DecodedImages, usable_cpus
from oct_assets.ml.nets import to_input


@contextmanager
def deterministic_torch(seed: int, threads: int, device: torch.device) -> Iterator[None]:
    """Seed torch and fix the thread count (restored afterwards); on CUDA, also force
    deterministic kernels.

    The thread count is part of determinism: CPU reductions may split work differently.
    The CPU kernels used here are deterministic already, and the first
    `use_deterministic_algorithms` call costs ~1.6 s of imports, so it is CUDA-only.
    """
    saved = (torch.get_num_threads(), None)
    torch.set_num_threads(threads or usable_cpus())
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
    """Loads a batch of sample rows from the decode cache as a network input tensor."""

    def __init__(self, images: DecodedImages, channels: int):
        self.images, self.channels = images, channels

    def __call__(self, rows: np.ndarray) -> Tensor:
        return to_input(torch.from_numpy(self.images.read(rows)), self.channels)


def predict_logits(
    net: nn.Module,
    reader: BatchReader,
    rows: np.ndarray,
    device: torch.device,
    batch_size: int,
    tta_flip: bool,
    amp: bool = True,
) -> Tensor:
    """Eval-mode logits for rows (in the given order), optionally averaged with the mirror."""
    net.eval()
    out = []
    with torch.inference_mode(), autocast(device, amp):
        for start in range(0, len(rows), batch_size):
            x = to_device(reader(rows[start : start + batch_size]), device)
            logits = net(x).float()
            if tta_flip:
                logits = (logits + net(x.flip(-1)).float()) / 2
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0)


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """A batch on the device, channels-last (faster oneDNN/cuDNN kernels)."""
    return x.to(device, non_blocking=True, memory_format=torch.channels_last)


def autocast(device: torch.device, amp: bool, cpu_bf16: bool = False):
    """fp16 autocast on CUDA when `amp` (TrainConfig.amp); on the CPU, bf16 only when
    `cpu_bf16` (TrainConfig.cpu_bf16, training only: inference stays float32)."""
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)
    return torch.autocast("cuda", dtype=torch.float16, enabled=amp)
