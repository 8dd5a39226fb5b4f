"""Checkpoint cost: its share of an epoch, and a resumed start against a cold one.

On the real-data preset (`real_data_config`) over the real OCT2017 scans when present (else
the synthetic generator), with a warm decode cache:

1. Share of an epoch: a checkpointed run of `--epochs` epochs writes one checkpoint per epoch
   end; the loop times each write apart from the epoch (`checkpoint_seconds`). The figure is
   the mean write against the mean epoch after the first. Goal: at most 2%.
2. Start-up: from calling `train` to the first training step, cold (no checkpoint) against
   resuming from that run's epoch-1 checkpoint (reading and restoring it), interleaved
   `--runs` times.

    .venv/bin/python benchmarks/bench_checkpoint.py [--epochs 3] [--runs 7]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import alternate, report
from oct_assets.ml import loop
from oct_assets.ml.checkpoint import CHECKPOINT_PT
from oct_assets.ml.config import real_data_config
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import bench_source


class FirstStep(Exception):
    """Raised at the first training step: start-up is over."""


def time_to_first_step(sample: Path, work: Path, config, checkpoint_dir: Path | None) -> float:
    """Seconds from calling `train` to its first training step (the run is then abandoned)."""
    real = loop.training_batch

    def first(*args, **kwargs):
        raise FirstStep

    loop.training_batch = first
    started = time.perf_counter()
    try:
        train(sample, work / "abandoned", config, work / "cache", None, checkpoint_dir)
    except FirstStep:
        return time.perf_counter() - started
    finally:
        loop.training_batch = real
    raise RuntimeError("training never reached a step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the run (>= 2)")
    parser.add_argument("--runs", type=int, default=7, help="start-ups timed per candidate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = real_data_config(epochs=args.epochs)
    with tempfile.TemporaryDirectory(prefix="bench_checkpoint_") as tmp:
        work = Path(tmp)
        sample = bench_source(work, 256)
        ckpt, resume_dir = work / "ckpt", work / "resume"

        def keep_epoch_1(record: dict) -> None:  # then ckpt holds epoch 1's checkpoint
            if record["epoch"] == 2:
                shutil.copytree(ckpt, resume_dir)

        m = train(sample, work / "run", config, work / "cache", keep_epoch_1, ckpt)
        epochs = [r["seconds"] for r in m["history"][1:] or m["history"]]
        write = m["checkpoint_seconds"] / m["epochs_run"]
        size = (ckpt / CHECKPOINT_PT).stat().st_size / 2**20
        share = write / statistics.mean(epochs)
        print(
            f"real-data preset: {m['n_fit']} images, {m['threads']} threads, "
            f"epoch {statistics.mean(epochs):.2f}s (after the first), "
            f"checkpoint {size:.1f} MiB written in {write:.3f}s"
        )
        print(f"ratio checkpoint / epoch = {share:.4f}  (goal: <= 0.02)")

        times = alternate(
            args.runs,
            **{
                "resume start-up": lambda: time_to_first_step(sample, work, config, resume_dir),
                "cold start-up": lambda: time_to_first_step(sample, work, config, None),
            },
        )
        report(times, baseline="cold start-up", goal="resuming adds well under a second")
        extra = statistics.median(times["resume start-up"]) - statistics.median(
            times["cold start-up"]
        )
        print(f"resuming adds {extra:.3f}s to the start-up (reading {size:.1f} MiB, restoring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
