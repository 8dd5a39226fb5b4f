"""Training throughput: compact net on the decode cache vs the seed's network and data path.

All runs happen side by side in this process on the same images and thread count, after a
discarded warm-up run. The figure is steady-state training images per second (data loading,
augmentation, forward, backward, optimiser step), from every epoch but the first; the
one-off cache fill is reported apart. Goal: default compact config >= 30x the seed.

    .venv/bin/python benchmarks/bench_training.py [--images 256] [--seed-images 64]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oct_assets.ml.config import TrainConfig, real_data_config
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import bench_source, resample


def steady_rate(metrics: dict) -> float:
    """Images per second over all epochs after the first (lazy kernel set-up happens there)."""
    later = metrics["history"][1:] or metrics["history"]
    images = sum(r["images_per_second"] * r["seconds"] for r in later)
    return images / sum(r["seconds"] for r in later)


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
            "compact, real-data config, cached": (big, real_data_config(**common)),
            "seed net, seed data path (224 RGB)": (
                small,
                TrainConfig(
                    architecture="seed", data_path="seed", image_size=224, augment=False, **common
                ),
            ),
        }
        rates = {}
        for k, (name, (sample, config)) in enumerate(runs.items()):
            m = train(sample, work / f"run{k}", config, cache_dir=work / "cache")
            rates[name] = steady_rate(m)
            print(
                f"{name:36s} {config.image_size:3d}px {rates[name]:8.1f} img/s"
                f"  ({m['n_fit']} images x {m['epochs_run']} epochs, {m['threads']} threads,"
                f" cache fill {m['decode_seconds']:.1f}s)"
            )
        base = rates["seed net, seed data path (224 RGB)"]
        for name in list(runs)[:2]:
            print(f"ratio {name} / seed: {rates[name] / base:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
