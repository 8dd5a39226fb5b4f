"""`python -m oct_assets [--config RUN_CONFIG.yaml]`: materialise the whole local graph, then
say what it got and where.

Uses the persistent instance when `DAGSTER_HOME` is set (so the UI shows the run), else an
ephemeral one; either way outputs land in `$OCT_DATA_DIR` and later runs reuse them. The
terminal shows one line per step and the training progress; the full Dagster log goes to a
file under `$OCT_DATA_DIR/logs/`, whose path is printed.
"""

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance, DagsterInvalidConfigError, validate_run_config

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.assets.images import ReducedSampleConfig
from oct_assets.assets.metadata import SYNTHETIC_WARNING
from oct_assets.assets.model import TrainedModelConfig
from oct_assets.assets.predictions import predictions
from oct_assets.cli.run_log import LOGGERS
from oct_assets.contracts.assets import RAW_OCT_IMAGES, REDUCED_SAMPLE, TRAINED_MODEL
from oct_assets.contracts.files import exclusive_lock
from oct_assets.contracts.formats import METRICS_JSON
from oct_assets.definitions import LOCAL_GRAPH_JOB, defs
from oct_assets.ml.config import TrainConfig
from oct_assets.paths import ENV_DATA_DIR, data_dir, images_dir
from oct_assets.store.salt import read_manifest


class SettingsError(ValueError):
    """A `--config` file or setting that cannot run; the message names it."""


def load_run_config(path: Path) -> dict[str, Any] | None:
    """The run config in `path`, or a `SettingsError` naming the file and what is wrong."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--config {path}: cannot read it ({exc})") from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"--config {path}: not valid YAML ({exc})") from exc
    if config is not None and not isinstance(config, dict):
        raise SettingsError(
            f"--config {path}: expected a mapping such as `ops: {{trained_model: {{config: "
            f"...}}}}`, got a YAML {type(config).__name__}"
        )
    return config


def check_settings(run_config: dict | None, source: str = "run config") -> None:
    """Refuse unknown keys, wrong types and out-of-range settings at launch, naming the field,
    before any step runs: Dagster's schema first (keys and types), then the ranges."""
    try:
        validate_run_config(defs.resolve_job_def(LOCAL_GRAPH_JOB), run_config or {})
    except DagsterInvalidConfigError as exc:
        # Dagster appends the whole expected schema; the first sentence names the field.
        problems = "; ".join(e.message.split(" Expected: ")[0] for e in exc.errors)
        raise SettingsError(f"{source}: {problems}") from None
    ops = (run_config or {}).get("ops") or {}
    sample = (ops.get(REDUCED_SAMPLE) or {}).get("config") or {}
    train = (ops.get(TRAINED_MODEL) or {}).get("config") or {}
    ReducedSampleConfig(**sample)
    TrainConfig.from_dict(TrainedModelConfig(**train).model_dump())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oct_assets", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="run config YAML, e.g. oct_assets/presets/real_data.yaml for real scans",
    )
    args = parser.parse_args(argv)
    log_file = data_dir() / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        run_config = load_run_config(args.config) if args.config else None
        images = images_dir()
        check_settings(run_config, f"--config {args.config}" if args.config else "run config")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.touch()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"oct_assets: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"oct_assets: cannot write the run log {log_file} ({exc.strerror}); "
            f"set {ENV_DATA_DIR} to a writable folder",
            file=sys.stderr,
        )
        return 2
    print(f"oct_assets: images {images}; full log in {log_file}", file=sys.stderr)
    logging.captureWarnings(True)  # Dagster's Python warnings go to the file, not the terminal
    logging.getLogger("py.warnings").addHandler(logging.FileHandler(log_file))
    logging.getLogger("py.warnings").propagate = False
    warnings.simplefilter("default")
    os.environ.setdefault("OCT_TRAIN_LOG_LEVEL", "WARNING")  # the trainer's progress: via Pipes
    instance = open_instance()
    job = defs.resolve_job_def(LOCAL_GRAPH_JOB).with_logger_defs(LOGGERS)
    loggers = {"steps": {}, "file": {"config": {"path": str(log_file)}}}
    run_config = {**(run_config or {}), "loggers": loggers}
    result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    if not result.success:
        print(f"\noct_assets: the run failed; the full log is {log_file}", file=sys.stderr)
        return 1
    print_summary(result, log_file)
    return 0


def open_instance() -> DagsterInstance:
    """The instance of `DAGSTER_HOME`, else an ephemeral one.

    Two first runs on a fresh `DAGSTER_HOME` would both create its SQLite tables, and one
    would fail ("table runs already exists"): they take turns creating it.
    """
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return DagsterInstance.ephemeral()
    if not Path(home).is_dir():
        return DagsterInstance.get()  # Dagster's own error names the variable and the folder
    with exclusive_lock(Path(home) / ".oct_assets-instance.lock"):
        return DagsterInstance.get()


def print_summary(result, log_file: Path) -> None:
    """The results table; says so loudly when they come from synthetic data."""
    raw = result.output_for_node(RAW_OCT_IMAGES)
    synthetic = bool(read_manifest(raw.path).summary.get("synthetic"))
    print("\n== oct_assets: results ==")
    if synthetic:
        print(f"!! {SYNTHETIC_WARNING}: the accuracy below says nothing about real scans !!")
    print(f"images:      {images_dir()}{' (SYNTHETIC)' if synthetic else ''}")
    for asset in LOCAL_GRAPH:
        name = asset.key.to_user_string()
        print(f"{name + ':':<16}{result.output_for_node(name).path}")
    scored = result.output_for_node(predictions.key.to_user_string())
    metrics = json.loads((scored.path / METRICS_JSON).read_text())
    data = " (SYNTHETIC data)" if synthetic else ""
    print(f"test accuracy: {metrics['accuracy']:.4f} on {metrics['n_images']} images{data}")
    print(f"all outputs under {data_dir()}")
    print(f"full log: {log_file}")
