"""Terminating a run stops the training process and leaves no complete-looking model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.paths import PROJECT_ROOT
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


COMMANDS = {
    "python -m oct_assets": [sys.executable, "-m", "oct_assets", "--config"],
    "dagster asset materialize": [
        str(Path(sys.executable).with_name("dagster")),
        *("asset", "materialize", "-m", "oct_assets.definitions"),
        *("--select", "raw_oct_images,reduced_sample,trained_model", "-c"),
    ],
}


def _env() -> dict[str, str]:
    """This test's environment (its OCT_DATA_DIR), no DAGSTER_HOME, the project importable."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["python -m oct_assets", "dagster asset materialize"])
def test_kill_9_of_the_dagster_process_leaves_no_trainer(
    tiny_tree: Path, data_env: Path, how: str
) -> None:
    """Killed with SIGKILL mid-training: the trainer and every process it started die with it
    (the trainer, and a multiprocess executor's step process, ask the kernel for that)."""
    config = data_env.parent / "slow.yaml"
    config.write_text(
        json.dumps(
            {
                "ops": {
                    "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},
                    "trained_model": {"config": {"epochs": 500, "image_size": 32}},
                }
            }
        )
    )
    log = data_env.parent / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            COMMANDS[how] + [str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_env.parent,  # the CLI's throw-away DAGSTER_HOME lands here
            env=_env(),
        )
    try:
        deadline = time.time() + 180
        trainer: list[int] = []
        while not trainer:
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
            trainer = [p for p in descendants(proc.pid) if b"oct_assets.ml.train" in _cmdline(p)]
        time.sleep(2)  # into training, past the decode workers' start
        family = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 30
    while any(alive(p) for p in family) and time.time() < deadline:
        time.sleep(0.2)
    assert [p for p in family if alive(p)] == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
