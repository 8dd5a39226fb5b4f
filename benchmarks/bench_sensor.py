"""An unchanged `new_images_sensor` tick against `find` on the same 100,000-file tree.

Both run side by side in one process, interleaved, after a warm-up (so both see a warm page
cache); the ratio of their medians is the result. The target is a ratio of at most 1.5.

    .venv/bin/python benchmarks/bench_sensor.py [--files 100000] [--repeat 9] [--keep]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance, build_sensor_context

from oct_assets.contracts.formats import CLASSES
from oct_assets.dataset.scan import tree_fingerprint
from oct_assets.sensors.images import new_images_sensor

TEST_SHARE = 0.03  # like OCT2017: most images are in train


def make_tree(root: Path, n_files: int) -> None:
    """`n_files` one-byte images in the OCT2017 layout (the sensor never opens them)."""
    per_class = {"train": round(n_files * (1 - TEST_SHARE) / 4)}
    per_class["test"] = n_files // 4 - per_class["train"]
    for split, n in per_class.items():
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{label}-{1_000_000 + i // 4}-{i % 4}.jpeg").write_bytes(b"\xff")


def time_find(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["find", str(root), "-printf", "%s %T@ %p\n"], stdout=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - started


def time_tick(instance: DagsterInstance, cursor: str) -> float:
    started = time.perf_counter()
    data = new_images_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
    elapsed = time.perf_counter() - started
    if data.run_requests or data.cursor != cursor:
        raise RuntimeError("the tree changed during the benchmark: the tick was not a no-op")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the generated tree")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_sensor_", dir="/tmp"))
    root = workdir / "OCT2017"
    os.environ["OCT_IMAGES_DIR"] = str(root)
    try:
        started = time.perf_counter()
        make_tree(root, args.files)
        n = sum(len(files) for _, _, files in os.walk(root))
        print(f"tree: {n} files under {root} ({time.perf_counter() - started:.1f}s to create)")
        with DagsterInstance.ephemeral() as instance:
            first = new_images_sensor.evaluate_tick(build_sensor_context(instance=instance))
            assert first.run_requests and first.cursor, "the first tick should request a run"
            time_find(root), time_tick(instance, first.cursor)  # warm-up
            finds, ticks, fingerprints = [], [], []
            for _ in range(args.repeat):
                finds.append(time_find(root))
                ticks.append(time_tick(instance, first.cursor))
                t0 = time.perf_counter()
                tree_fingerprint(root)
                fingerprints.append(time.perf_counter() - t0)
        find_s, tick_s = statistics.median(finds), statistics.median(ticks)
        fp_s = statistics.median(fingerprints)
        print(f"find -printf '%s %T@ %p\\n'  median {find_s:.3f}s  min {min(finds):.3f}s")
        print(f"unchanged sensor tick       median {tick_s:.3f}s  min {min(ticks):.3f}s")
        print(f"full tree_fingerprint       median {fp_s:.3f}s  (a tick that sees a change)")
        print(
            f"ratio unchanged tick / find: {tick_s / find_s:.2f} (median), "
            f"{min(ticks) / min(finds):.2f} (min); target <= 1.5"
        )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
