"""DDP overhead on CPU: 2 torchrun ranks x 1 thread against 1 process x 2 threads.

Both train the same sample (real scans when present, else synthetic ones, repeated as
symlinks) with the same config and global batch, from a decode cache filled beforehand, as
`python -m oct_assets.ml.train` subprocesses launched alternately so machine drift hits both.
The figure is steady-state training images/s (epochs after the first), as in
bench_training.py. A ratio near 1 means gradient all-reduce and the rank split cost little;
on GPUs the split is the point (N devices), so this bounds the coordination cost only.
1 process x 1 thread is shown as well: on a busy machine two OpenMP threads in one process
wait on each other at every operator and lose badly, which two one-thread ranks do not, so
"2 ranks / 1 thread-alone" (2.0 = perfect scaling) is the steadier figure there.

    .venv/bin/python benchmarks/bench_ddp.py [--images 256] [--real-images 128] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_training import steady_rate

from oct_assets.ml.cache import decoded_images
from oct_assets.ml.config import TrainConfig, real_data_config
from oct_assets.ml.data import read_sample
from oct_assets_tests.fixtures_ml import REPO, bench_source, resample


def run(sample: Path, out: Path, config: TrainConfig, cache: Path, ranks: int) -> dict:
    """Train in a fresh process (or `ranks` torchrun ranks); return rank 0's metrics."""
    config_file = out.with_suffix(".json")
    config_file.write_text(json.dumps(config.to_dict()))
    launcher = [sys.executable, "-m", "oct_assets.ml.train"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(ranks), "-m", "oct_assets.ml.train"]
    args = ["--sample", sample, "--out", out, "--config", config_file, "--cache-dir", cache]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run([*launcher, *map(str, args)], check=True, env=env, capture_output=True)
    return json.loads((out / "model.json").read_text())["metrics"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="train images, default config")
    parser.add_argument("--real-images", type=int, default=128, help="... real-data config")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (>= 2)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternated")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        work = Path(tmp)
        source = bench_source(work, max(args.images, args.real_images))
        common = {"val_fraction": 0.0, "seed": 0, "epochs": args.epochs, "batch_size": 32}
        recipes = {
            "default config (64 px)": (TrainConfig(**common), args.images),
            "real-data config (plain net, 160 px crops)": (
                real_data_config(**common),
                args.real_images,
            ),
        }
        variants = {  # label: (ranks, threads per rank)
            "1 process x 2 threads": (1, 2),
            "1 process x 1 thread": (1, 1),
            "2 ranks x 1 thread": (2, 1),
        }
        for name, (config, n) in recipes.items():
            sample = resample(source, work / f"sample{n}", n, f"bench-ddp-{n}")
            decoded_images(read_sample(sample), config.image_size, config.fit, work / "cache")
            rates: dict[str, list[float]] = {label: [] for label in variants}
            for k in range(args.rounds):
                for label, (ranks, threads) in variants.items():
                    config_here = TrainConfig.from_dict({**config.to_dict(), "threads": threads})
                    out = work / f"{name[:4]}-{ranks}-{threads}-{k}"
                    metrics = run(sample, out, config_here, work / "cache", ranks)
                    rates[label].append(steady_rate(metrics))
            medians = {label: statistics.median(r) for label, r in rates.items()}
            for label, r in rates.items():
                runs = ", ".join(f"{x:.1f}" for x in r)
                print(f"{name:26s} {label:22s} {medians[label]:7.1f} img/s  (runs: {runs})")
            ddp = medians["2 ranks x 1 thread"]
            print(
                f"ratio {name}, {n} images: 2 ranks x 1 thread / 1 process x 2 threads = "
                f"{ddp / medians['1 process x 2 threads']:.2f}x; / 1 process x 1 thread = "
                f"{ddp / medians['1 process x 1 thread']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
