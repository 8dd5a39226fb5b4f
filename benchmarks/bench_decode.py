"""Decoding: a cold fill of the uint8 cache vs the seed's per-epoch JPEG -> RGB float decode.

Side by side on the same files (read once beforehand so both find them in the page cache):
  seed   decode every JPEG at full resolution to RGB, resize, float32 (what the seed does
         every epoch), one process;
  cold   `decoded_images` into an empty cache dir: draft-mode grayscale decode in worker
         processes, written once as uint8;
  warm   `decoded_images` again plus one epoch of batch reads, with PIL.Image.open patched
         to count calls: a warm epoch must open no image. Goal: cold >= 2.5x faster than seed.

    .venv/bin/python benchmarks/bench_decode.py [--images 348] [--size 224] [--workers 0]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from benchmarks._common import decode_rgb_float
from oct_assets.ml.cache import decoded_images
from oct_assets.ml.config import FITS
from oct_assets.ml.data import read_sample
from oct_assets_tests.fixtures_ml import bench_source, resample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=348, help="images to decode (348)")
    parser.add_argument("--size", type=int, default=224, help="decoded square side (224)")
    parser.add_argument("--fit", default="crop", choices=FITS)
    parser.add_argument("--workers", type=int, default=0, help="cache-fill processes, 0 = cores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        work = Path(tmp)
        source = bench_source(work, args.images)
        sample = read_sample(resample(source, work / "sample", args.images, "bench-decode"))
        paths = [sample.path(i) for i in range(len(sample))]
        for p in paths:  # page cache warm for both contestants
            p.read_bytes()

        t0 = time.perf_counter()
        for p in paths:
            decode_rgb_float(p, args.size)
        seed_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        images = decoded_images(sample, args.size, args.fit, work / "cache", args.workers)
        cold_s = time.perf_counter() - t0

        opened = {"n": 0}
        real_open = Image.open

        def counting_open(*a, **k):
            opened["n"] += 1
            return real_open(*a, **k)

        Image.open = counting_open
        try:
            t0 = time.perf_counter()
            warm = decoded_images(sample, args.size, args.fit, work / "cache", workers=1)
            rows = np.random.default_rng(0).permutation(len(sample))
            for start in range(0, len(rows), 32):
                warm.read(np.sort(rows[start : start + 32]))
            warm_s = time.perf_counter() - t0
        finally:
            Image.open = real_open
        assert np.array_equal(warm.read(rows[:8]), images.read(rows[:8]))

        n = len(sample)
        workers = args.workers or os.cpu_count()
        print(f"{n} images, {args.size}px, fit={args.fit}, {workers} cache-fill workers")
        print(f"seed decode (RGB float, full res)  {seed_s:7.2f}s  {n / seed_s:8.1f} img/s")
        print(f"cold cache fill (uint8, draft)     {cold_s:7.2f}s  {n / cold_s:8.1f} img/s")
        print(f"warm epoch (cache reads only)      {warm_s:7.2f}s  {n / warm_s:8.1f} img/s")
        print(f"JPEG opens during the warm epoch: {opened['n']}")
        print(f"ratio cold fill / seed decode: {seed_s / cold_s:.1f}x")
        print(f"ratio warm epoch / seed decode: {seed_s / warm_s:.0f}x")
        if opened["n"]:
            print("FAIL: the warm epoch decoded images")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
