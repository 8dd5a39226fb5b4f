"""A `trained_model` run killed or terminated mid-training resumes from its checkpoint on the
next materialisation, and publishes the uninterrupted run's model.pt byte for byte."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.assets.model import checkpoint_dir, trained_model
from oct_assets.ml.checkpoint import CHECKPOINT_PT
from oct_assets.paths import PROJECT_ROOT
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.resources import LOCAL_RESOURCES

SAMPLE = {"train_per_class": 6, "test_per_class": 3}
# ~0.2 s an epoch on 2 cores: long enough to be killed in the middle, short enough to repeat.
TRAIN = {"epochs": 30, "image_size": 48, "batch_size": 8, "threads": 1, "decode_workers": 1}
RESOURCES = {**LOCAL_RESOURCES, "io_manager": LatestArtifactIOManager()}


def materialise_model() -> dict:
    """`trained_model` in this process, its sample read through the `latest.json` pointer."""
    result = materialize(
        LOCAL_GRAPH[:3],
        selection=[trained_model.key],
        instance=DagsterInstance.ephemeral(),
        resources=RESOURCES,
        run_config={"ops": {"trained_model": {"config": TRAIN}}},
    )
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def trainers(data: Path) -> list[int]:
    """The `oct_assets.ml.train` processes training on a sample under `data`."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [p for p in pids if b"oct_assets.ml.train" in (c := _cmdline(p)) and bytes(data) in c]


@pytest.mark.parametrize(
    ("victim", "how"),
    [("trainer", signal.SIGKILL), ("dagster CLI", signal.SIGKILL), ("dagster CLI", signal.SIGTERM)],
    ids=["kill -9 trainer", "kill -9 dagster CLI", "SIGTERM dagster CLI"],
)
def test_interrupted_run_resumes_to_the_same_model(
    tiny_tree: Path, data_env: Path, victim: str, how: signal.Signals
) -> None:
    """Killed at whatever step it is in once two epoch-end checkpoints were written."""
    materialize(
        LOCAL_GRAPH[:2],
        instance=DagsterInstance.ephemeral(),
        resources=RESOURCES,
        run_config={"ops": {"reduced_sample": {"config": SAMPLE}}},
    )
    straight = materialise_model()
    folder, salt = Path(straight["path"]), straight["salt"]
    expected = (folder / "model.pt").read_bytes()
    ckpt = checkpoint_dir("trained_model", salt)
    assert not ckpt.exists()  # removed once the model is published
    shutil.rmtree(folder)  # so the next run of the same salt trains again

    config = json.dumps({"ops": {"trained_model": {"config": TRAIN}}})
    cli = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize"]
    cli += ["-m", "oct_assets.definitions", "--select", "trained_model", "--config-json", config]
    log = data_env.parent / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cli, stdout=out, stderr=subprocess.STDOUT, cwd=data_env.parent, env=_env()
        )
    try:
        deadline, first = time.time() + 180, None
        while True:  # until a second epoch-end checkpoint has replaced the first
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            try:
                inode = (ckpt / CHECKPOINT_PT).stat().st_ino
            except FileNotFoundError:
                inode = None
            if first is None:
                first = inode
            elif inode not in (None, first):
                break
            time.sleep(0.02)
        targets = trainers(data_env) if victim == "trainer" else [proc.pid]
        assert len(targets) == 1, targets
        os.kill(targets[0], how)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, log.read_text()[-3000:]
    deadline = time.time() + 30
    while trainers(data_env):  # a terminated trainer writes its last checkpoint, then exits
        assert time.time() < deadline
        time.sleep(0.2)
    assert (ckpt / CHECKPOINT_PT).is_file() and not folder.exists()

    resumed = materialise_model()
    assert resumed["salt"] == salt and resumed["resumed_from_epoch"] >= 2, resumed
    print(
        f"{victim} {how.name}: resumed in epoch {resumed['resumed_from_epoch']} at step "
        f"{resumed['resumed_from_step']}"
    )
    assert (folder / "model.pt").read_bytes() == expected
    assert not ckpt.exists()
