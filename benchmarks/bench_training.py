"""Training throughput: compact net on the decode cache vs the seed's network and data path.

Both run side by side in this process on the same images and thread count; the figure is
training images per second (forward, backward, optimiser step, data loading; the one-off
cache fill is excluded and reported separately). Goal: >= 30x.

    .venv/bin/python benchmarks/bench_training.py [--images 128] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oct_assets.ml.config import TrainConfig, real_data_config
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import bench_source, resample


def run(sample: Path, out: Path, config: TrainConfig) -> dict:
    return train(sample, out, config, cache_dir=out.parent / "cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="train images (default 128)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the compact runs")
    parser.add_argument("--seed-epochs", type=int, default=1, help="epochs for the seed run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        work = Path(tmp)
        source = bench_source(work, args.images)
        sample = resample(source, work / "sample", args.images, f"bench-train-{args.images}")
        common = {"val_fraction": 0.0, "seed": 0}
        runs = {
            "compact, default config, cached": replace(TrainConfig(), epochs=args.epochs, **common),
            "compact, real-data config, cached": real_data_config(epochs=args.epochs, **common),
            "seed net, seed data path (224 RGB)": TrainConfig(
                architecture="seed",
                data_path="seed",
                image_size=224,
                epochs=args.seed_epochs,
                batch_size=32,
                augment=False,
                **common,
            ),
        }
        results = {}
        for name, config in runs.items():
            m = run(sample, work / name.replace(" ", "_").replace(",", ""), config)
            results[name] = m
            print(
                f"{name:38s} size {config.image_size:3d}  {m['images_per_second']:8.1f} img/s"
                f"  (train {m['train_seconds']:.1f}s, decode {m['decode_seconds']:.1f}s,"
                f" {m['threads']} threads)"
            )
        base = results["seed net, seed data path (224 RGB)"]["images_per_second"]
        for name in list(runs)[:2]:
            print(f"ratio {name} / seed: {results[name]['images_per_second'] / base:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
