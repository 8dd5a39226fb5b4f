"""A rerun of the whole local graph with nothing changed, against its cold run, side by side.

    .venv/bin/python benchmarks/bench_cache_hit.py [--rounds 3]

Each round materialises the graph (default config, the embedded synthetic images) into a
fresh OCT_DATA_DIR (cold), then again with nothing changed (warm: every asset a cache hit).
Goal: warm at most 5% of cold. Both run in-process on an ephemeral instance, as
`python -m oct_assets` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oct_bench_cache_"))
    os.environ["OCT_IMAGES_DIR"] = str(work / "OCT2017")
    from dagster import DagsterInstance

    from oct_assets.dataset.synthetic import make_synthetic_oct2017
    from oct_assets.definitions import defs

    make_synthetic_oct2017(work / "OCT2017")
    job = defs.resolve_job_def("local_graph")
    cold, warm = [], []
    for i in range(args.rounds):
        os.environ["OCT_DATA_DIR"] = str(work / f"data{i}")
        instance = DagsterInstance.ephemeral()
        for times in (cold, warm):
            t = time.perf_counter()
            result = job.execute_in_process(instance=instance)
            times.append(time.perf_counter() - t)
            assert result.success
        hits = [
            e.materialization.metadata["cache_hit"].value
            for e in result.get_asset_materialization_events()
        ]
        assert all(hits), "the warm run was not a cache hit everywhere"
        print(f"round {i}: cold {cold[-1]:.2f}s  warm {warm[-1]:.2f}s", file=sys.stderr)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"cold median {c:.2f}s, warm median {w:.3f}s")
    print(f"ratio warm / cold = {w / c:.3f}  (goal: <= 0.05)")


if __name__ == "__main__":
    main()
