"""`python -m oct_assets [--config RUN_CONFIG.yaml]`: materialise the whole local graph, then
say what it got and where.

Uses the persistent instance when `DAGSTER_HOME` is set (so the UI shows the run), else an
ephemeral one; either way outputs land in `$OCT_DATA_DIR` and later runs reuse them.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import yaml
from dagster import DagsterInstance

from oct_assets.constants import data_dir, images_dir
from oct_assets.definitions import defs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oct_assets", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="run config YAML, e.g. oct_assets/presets/real_data.yaml for real scans",
    )
    args = parser.parse_args(argv)
    run_config = yaml.safe_load(args.config.read_text()) if args.config else None
    instance = (
        DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    )
    job = defs.resolve_job_def("local_graph")
    result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    if not result.success:
        print("\noct_assets: the run failed; the error is in the log above.", file=sys.stderr)
        return 1
    print("\n== oct_assets: results ==")
    print(f"images:      {images_dir()}")
    for name in ("raw_oct_images", "reduced_sample", "trained_model", "predictions"):
        artifact = result.output_for_node(name)
        print(f"{name + ':':<16}{artifact.path}")
    predictions = result.output_for_node("predictions")
    metrics = json.loads((predictions.path / "metrics.json").read_text())
    print(f"test accuracy: {metrics['accuracy']:.4f} on {metrics['n_images']} images")
    print(f"all outputs under {data_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
