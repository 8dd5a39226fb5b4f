"""`inbox_predictions` with one new scan among N files, against an unchanged tick, side by side.

A tiny model is trained on synthetic scans, then an inbox of N valid PNG scans (K distinct
contents, in folders of 1,000) is scored once. Then, interleaved: "one new scan" adds one new
scan and materialises; "unchanged" materialises again with nothing changed (a cache hit: the
listing, the fingerprint and Dagster's own cost). Each run's peak RSS is measured in-process
(`/proc/self/clear_refs` resets the high-water mark), and the whole is done for two inbox
sizes, so the last line says whether memory grows with the inbox. Goal: one new scan among
100,000 under 5 s, and the same peak memory at both sizes.

    .venv/bin/python benchmarks/bench_inbox.py [--sizes 10000 100000] [--distinct 200]
        [--repeat 5] [--keep]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import alternate, report

PER_FOLDER = 1000


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM), so each run reports its own."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def scan_png(k: int) -> bytes:
    """A valid 64x64 grayscale scan, distinct for each `k`, a few hundred bytes."""
    import numpy as np
    from PIL import Image

    pixels = np.full((64, 64), 90, np.uint8)
    pixels[40:44] = 200  # a bright band, like an RPE
    pixels[k % 64, :] = (k * 37) % 256
    pixels[:, (k // 64) % 64] = (k * 11) % 256
    pixels[0, :4] = np.frombuffer(k.to_bytes(4, "big"), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return buf.getvalue()


def make_inbox(root: Path, n: int, distinct: int, first: int) -> None:
    """`n` scans in folders of 1,000, with `distinct` contents numbered from `first`."""
    contents = [scan_png(first + k) for k in range(distinct)]
    for i in range(n):
        folder = root / f"clinic-{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        (folder / f"scan {i:06d}.png").write_bytes(contents[i % distinct])


def measure(
    materialise: Callable[[], dict], inbox: Path, repeat: int, new_ids: Iterator[int]
) -> tuple[float, float]:
    """Interleave one-new-scan runs with unchanged ones; print times, ratio and peak RSS."""
    peaks: dict[str, list[float]] = {"one new scan": [], "unchanged": []}

    def one_new() -> None:
        k = next(new_ids)  # never seen before, in any inbox: one decode, one inference
        (inbox / f"new {k}.png").write_bytes(scan_png(k))
        meta = materialise()
        peaks["one new scan"].append(peak_mib())
        counts = {key: meta[key] for key in ("n_files", "hashed", "scored_now", "reused")}
        assert meta["scored_now"] == 1 and meta["hashed"] == 1, counts

    def unchanged() -> None:
        meta = materialise()
        peaks["unchanged"].append(peak_mib())
        assert meta["cache_hit"] is True, meta["path"]

    materialise()  # warm-up: page cache, imports
    times = alternate(repeat, **{"one new scan": one_new, "unchanged": unchanged})
    report(times, baseline="unchanged", goal="one new scan among 100,000 under 5 s")
    for name, ps in peaks.items():
        print(f"{name:>24}: peak RSS median {statistics.median(ps):.0f} MiB")
    return statistics.median(times["one new scan"]), statistics.median(peaks["one new scan"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--distinct", type=int, default=200, help="distinct scan contents")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the data and inboxes")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_inbox_", dir="/tmp"))
    os.environ["OCT_DATA_DIR"] = str(work / "data")
    os.environ["OCT_IMAGES_DIR"] = str(work / "images")
    from dagster import DagsterInstance, materialize

    from oct_assets.assets.champion import champion_model
    from oct_assets.assets.graph import LOCAL_GRAPH
    from oct_assets.assets.inbox import inbox_predictions
    from oct_assets.dataset.synthetic import make_synthetic_oct2017
    from oct_assets_tests.serving.conftest import FAST_RUN, RESOURCES

    assets = [*LOCAL_GRAPH, champion_model, inbox_predictions]

    def materialise(instance: DagsterInstance, asset, config=None) -> dict:
        reset_peak()
        result = materialize(
            assets, selection=[asset], instance=instance, resources=RESOURCES, run_config=config
        )
        assert result.success
        [event] = result.get_asset_materialization_events()
        return {k: v.value for k, v in event.materialization.metadata.items()}

    try:
        make_synthetic_oct2017(work / "images", train_patients=4, test_patients=2)
        instance = DagsterInstance.ephemeral()
        materialize(LOCAL_GRAPH, instance=instance, resources=RESOURCES, run_config=FAST_RUN)
        champion = {"ops": {"champion_model": {"config": {"accuracy_floor": 0.0}}}}
        materialise(instance, champion_model, champion)
        summary = []
        new_ids = itertools.count(10**6)
        for n in args.sizes:
            inbox = work / f"inbox-{n}"
            started = time.perf_counter()
            make_inbox(inbox, n, args.distinct, first=len(summary) * args.distinct)
            print(
                f"\ninbox: {n} scans ({args.distinct} distinct) under {inbox} "
                f"({time.perf_counter() - started:.1f}s to create)"
            )
            os.environ["OCT_INBOX_DIR"] = str(inbox)
            started = time.perf_counter()
            first = materialise(instance, inbox_predictions)
            print(
                f"first run: {time.perf_counter() - started:.1f}s, peak {peak_mib():.0f} MiB, "
                f"{first['hashed']} read, {first['scored_now']} scored"
            )
            summary.append(
                (
                    n,
                    *measure(
                        lambda: materialise(instance, inbox_predictions),
                        inbox,
                        args.repeat,
                        new_ids,
                    ),
                )
            )
        if len(summary) > 1:
            (n0, t0, m0), (n1, t1, m1) = summary[0], summary[-1]
            print(
                f"\n{n1 // n0}x the files: one new scan {t1 / t0:.2f}x the time, "
                f"{m1 / m0:.2f}x the peak memory ({m0:.0f} -> {m1:.0f} MiB; goal: 1.0x)"
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
