"""Terminating a run stops the training process and leaves no complete-looking model."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets.store.salt import is_complete


def trainer_pids(sample_dir: Path) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"oct_assets.ml.train --sample {sample_dir}"],
        capture_output=True,
        text=True,
    )
    return [int(p) for p in out.stdout.split()]


def test_sigterm_stops_training_and_publishes_nothing(tiny_tree: Path, data_env: Path) -> None:
    sample_cfg = {"train_per_class": 6, "test_per_class": 3}
    first = materialize(
        LOCAL_GRAPH[:2],
        instance=DagsterInstance.ephemeral(),
        resources={"io_manager": LatestArtifactIOManager()},
        run_config={"ops": {"reduced_sample": {"config": sample_cfg}}},
    )
    sample_dir = first.output_for_node("reduced_sample").path
    config = {"ops": {"trained_model": {"config": {"epochs": 500, "image_size": 32}}}}
    cli = Path(sys.executable).with_name("dagster")
    log = data_env / "run.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [
                str(cli),
                "asset",
                "materialize",
                "-m",
                "oct_assets.definitions",
                "--select",
                "trained_model",
                "--config-json",
                json.dumps(config),
            ],
            stderr=stderr,
        )
    try:
        deadline = time.time() + 180
        while '"epoch": 2' not in log.read_text():
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert trainer_pids(sample_dir), "training never started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    deadline = time.time() + 30
    while trainer_pids(sample_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert trainer_pids(sample_dir) == []
    model_root = data_env / "trained_model"
    folders = list(model_root.iterdir()) if model_root.exists() else []
    assert not any(is_complete(f) or (f / "model.pt").exists() for f in folders), folders
    assert not (model_root / "latest.json").exists()
