"""Training throughput: the ML core on the decode cache vs the seed's network and data path.

All runs happen side by side in this process on the same images and thread count, after a
discarded warm-up run. The figure is steady-state training images per second (data loading,
augmentation, forward, backward, optimiser step), from every epoch but the first; the
one-off cache fill is reported apart. Goal: default compact config >= 30x the seed.

The baseline is the seed's data path, which the ML core no longer has: every epoch decodes
each JPEG in full to RGB float at 224 px (`decode_rgb_float`) for the seed's network. It is
rebuilt here from the core's public pieces (`build_net`, `to_input`, AdamW) in a plain loop.

    .venv/bin/python benchmarks/bench_training.py [--images 256] [--seed-images 64]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import decode_rgb_float
from oct_assets.ml.cache import usable_cpus
from oct_assets.ml.config import TrainConfig, real_data_config
from oct_assets.ml.data import read_sample
from oct_assets.ml.distributed import resolve_device
from oct_assets.ml.nets import build_net, to_input
from oct_assets.ml.runtime import deterministic_torch
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import bench_source, resample


def steady_rate(metrics: dict) -> float:
    """Images per second over all epochs after the first (lazy kernel set-up happens there)."""
    later = metrics["history"][1:] or metrics["history"]
    images = sum(r["images_per_second"] * r["seconds"] for r in later)
    return images / sum(r["seconds"] for r in later)


def seed_data_path(sample_dir: Path, config: TrainConfig) -> dict:
    """Train the seed's way: full JPEG decode to RGB float every epoch, no cache, no augment.

    Runs on the device the core would pick (with AMP on CUDA, as the core's loop did for this
    baseline). Returns metrics shaped like `train`'s (per-epoch seconds and images/s).
    """
    sample = read_sample(sample_dir)
    rows, labels = sample.indices("train"), torch.from_numpy(sample.labels)
    device = resolve_device(config.device)
    amp = config.amp and device.type == "cuda"
    threads = config.threads or usable_cpus()
    rng, history = np.random.default_rng(config.seed), []
    with deterministic_torch(config.seed, threads, device):
        net = build_net(config, len(sample.classes)).to(device, memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        bs = min(config.batch_size, len(rows))
        for _ in range(config.epochs):
            started, steps = time.perf_counter(), len(rows) // bs
            order = rng.permutation(rows)
            net.train()
            for k in range(steps):
                batch = np.sort(order[k * bs : (k + 1) * bs])
                pixels = [decode_rgb_float(sample.path(int(r)), config.image_size) for r in batch]
                x = to_input(torch.from_numpy(np.stack(pixels)), net.in_channels)
                x = x.to(device, memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    loss = F.cross_entropy(net(x).float(), labels[batch].to(device))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            history.append({"seconds": seconds, "images_per_second": steps * bs / seconds})
    return {
        "history": history,
        "n_fit": len(rows),
        "epochs_run": config.epochs,
        "threads": threads,
        "decode_seconds": 0.0,
        "device": device.type,
        "amp": amp,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="train images, compact runs")
    parser.add_argument("--seed-images", type=int, default=64, help="train images, seed run")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        work = Path(tmp)
        source = bench_source(work, args.images)
        big = resample(source, work / "big", args.images, f"bench-train-{args.images}")
        small = resample(source, work / "small", args.seed_images, "bench-train-seed")
        common = {"val_fraction": 0.0, "seed": 0, "epochs": args.epochs}
        train(big, work / "warmup", TrainConfig(**{**common, "epochs": 1}), work / "cache")
        runs = {
            "compact, default config, cached": (big, TrainConfig(**common)),
            "plain, real-data config, cached": (big, real_data_config(**common)),
            "seed net, seed data path (224 RGB)": (
                small,
                TrainConfig(architecture="seed", image_size=224, augment="none", **common),
            ),
        }
        if torch.cuda.is_available():  # what mixed precision buys (TrainConfig.amp, CUDA only)
            runs["plain, real-data config, AMP off"] = (
                big,
                real_data_config(amp=False, **common),
            )
        rates = {}
        for k, (name, (sample, config)) in enumerate(runs.items()):
            if config.architecture == "seed":
                m = seed_data_path(sample, config)
            else:
                m = train(sample, work / f"run{k}", config, cache_dir=work / "cache")
            rates[name] = steady_rate(m)
            print(
                f"{name:36s} {config.image_size:3d}px {rates[name]:8.1f} img/s"
                f"  ({m['n_fit']} images x {m['epochs_run']} epochs, {m['threads']} threads,"
                f" cache fill {m['decode_seconds']:.1f}s, {m.get('device', 'cpu')},"
                f" AMP {'on' if m.get('amp', False) else 'off'})"
            )
        base = rates["seed net, seed data path (224 RGB)"]
        for name in list(runs)[:2]:
            print(f"ratio {name} / seed: {rates[name] / base:.1f}x")
        if "plain, real-data config, AMP off" in rates:
            on, off = (rates[f"plain, real-data config, {k}"] for k in ("cached", "AMP off"))
            print(f"ratio AMP on / off, real-data config: {on / off:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
