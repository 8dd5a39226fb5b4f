"""`python -m oct_assets [--config RUN_CONFIG.yaml]`: materialise the whole local graph, then
say what it got and where. `python -m oct_assets champion | predict SCAN...`: see `commands`.

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

from oct_assets import commands
from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.assets.predictions import predictions
from oct_assets.definitions import LOCAL_GRAPH_JOB, defs
from oct_assets.ml.formats import METRICS_JSON
from oct_assets.paths import data_dir, images_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in commands.COMMANDS:  # champion, predict: no Dagster run
        return commands.main(argv)
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
    job = defs.resolve_job_def(LOCAL_GRAPH_JOB)
    result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    if not result.success:
        print("\noct_assets: the run failed; the error is in the log above.", file=sys.stderr)
        return 1
    print("\n== oct_assets: results ==")
    print(f"images:      {images_dir()}")
    for asset in LOCAL_GRAPH:
        name = asset.key.to_user_string()
        print(f"{name + ':':<16}{result.output_for_node(name).path}")
    scored = result.output_for_node(predictions.key.to_user_string())
    metrics = json.loads((scored.path / METRICS_JSON).read_text())
    print(f"test accuracy: {metrics['accuracy']:.4f} on {metrics['n_images']} images")
    print(f"all outputs under {data_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
