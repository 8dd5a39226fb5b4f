"""Peak memory of training on 2,000 vs 20,000 images: it must not grow with the sample.

Each size trains (decode cache fill + 1 epoch) in its own subprocess that reports its own
peak RSS (`ru_maxrss` of the training process; the decode workers are separate processes
whose ru_maxrss would include the parent's image at fork, before exec, so it is not shown).
Images are the real scans (or synthetic ones) repeated as symlinks. Goal: ratio <= 1.3x.
`--fill-only` measures the decode cache fill alone (images/s and peak RSS), which is what a
full-data run pays first, without the epoch of CPU training.

    .venv/bin/python benchmarks/bench_memory.py [--sizes 2000 20000] [--image-size 32]
        [--fit resize] [--fill-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fill_child(sample_dir: Path, out: Path, image_size: int, fit: str) -> int:
    """Fill the decode cache once and print seconds and peak RSS as JSON (fresh interpreter)."""
    import time

    from oct_assets.ml.cache import decoded_images
    from oct_assets.ml.data import read_sample

    sample = read_sample(sample_dir)
    started = time.perf_counter()
    decoded_images(sample, image_size, fit, out.parent / "cache")
    peak = {
        "self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n": len(sample),
        "decode_seconds": time.perf_counter() - started,
    }
    print(json.dumps(peak))
    return 0


def child(sample: Path, out: Path, image_size: int) -> int:
    """Train once and print peak RSS as JSON (runs in a fresh interpreter)."""
    from oct_assets.ml.config import TrainConfig
    from oct_assets.ml.train import train

    config = TrainConfig(epochs=1, image_size=image_size, batch_size=64, val_fraction=0.1)
    metrics = train(sample, out, config, cache_dir=out.parent / "cache")
    peak = {
        "self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_fit": metrics["n_fit"],
        "decode_seconds": metrics["decode_seconds"],
        "train_seconds": metrics["train_seconds"],
    }
    print(json.dumps(peak))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar="N")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--fit", default="resize", help="decode fit (--fill-only)")
    parser.add_argument("--fill-only", action="store_true", help="decode cache fill, no epoch")
    parser.add_argument("--child", nargs=2, metavar=("SAMPLE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child and args.fill_only:
        return fill_child(Path(args.child[0]), Path(args.child[1]), args.image_size, args.fit)
    if args.child:
        return child(Path(args.child[0]), Path(args.child[1]), args.image_size)
    logging.basicConfig(level=logging.WARNING)
    from oct_assets_tests.fixtures_ml import bench_source, resample

    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        source = bench_source(work, 200)
        peaks, rates = [], []
        for n in args.sizes:
            sample = resample(source, work / f"sample{n}", n, f"bench-memory-{n}")
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--image-size",
                    str(args.image_size),
                    "--fit",
                    args.fit,
                    *(["--fill-only"] if args.fill_only else []),
                    "--child",
                    str(sample),
                    str(work / f"model{n}"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            peak = json.loads(proc.stdout.strip().splitlines()[-1])
            peaks.append(peak["self_mib"])
            if args.fill_only:
                rates.append(peak["n"] / peak["decode_seconds"])
                print(
                    f"{n:6d} images: cache fill {peak['decode_seconds']:.1f}s = "
                    f"{rates[-1]:.0f} images/s ({args.image_size} px {args.fit}), peak RSS "
                    f"{peak['self_mib']:.1f} MiB (the filling process; workers hold a chunk each)"
                )
                continue
            print(
                f"{n:6d} images: peak RSS {peak['self_mib']:7.1f} MiB, fit {peak['n_fit']}, "
                f"decode {peak['decode_seconds']:.1f}s, 1 epoch {peak['train_seconds']:.1f}s"
            )
        print(f"ratio peak RSS {args.sizes[1]} / {args.sizes[0]}: {peaks[1] / peaks[0]:.2f}x")
        if rates:
            print(
                f"ratio fill images/s {args.sizes[1]} / {args.sizes[0]}: {rates[1] / rates[0]:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
