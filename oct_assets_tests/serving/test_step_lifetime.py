"""`kill -9` of `dagster asset materialize` mid-step: the step dies with it, publishes nothing,
moves no pointer, and the next run on the host marks the killed run failed."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from oct_assets.paths import PROJECT_ROOT
from oct_assets.resources.run_liveness import RUN_PROCESS_TAG
from oct_assets_tests.integration.test_termination import alive, descendants

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def materialise(home: Path, select: str, config: dict | None = None, **popen) -> subprocess.Popen:
    args = [DAGSTER, "asset", "materialize", "-m", "oct_assets.definitions", "--select", select]
    if config:
        args += ["--config-json", json.dumps(config)]
    return subprocess.Popen(args, env=_env(home), cwd=home, **popen)


def _wait_until(what, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not what():
        assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)


def _kill_and_check(proc: subprocess.Popen, home: Path) -> None:
    """SIGKILL the CLI; every process it started is gone within 30 s; the run is then marked
    failed by the next run on this instance."""
    family = descendants(proc.pid)
    assert family, "the step process never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(alive(p) for p in family) and time.time() < deadline:
        time.sleep(0.1)
    assert [p for p in family if alive(p)] == []
    with DagsterInstance.from_config(str(home)) as instance:
        [killed] = instance.get_runs(limit=1)  # the newest: the one killed
        assert killed.status == DagsterRunStatus.STARTED and RUN_PROCESS_TAG in killed.tags
    nxt = materialise(home, "raw_oct_images", stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    assert nxt.wait(timeout=300) == 0
    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(killed.run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    return home


def test_kill_9_during_champion_model(trained: Path, home: Path) -> None:
    """The step waits on the promotion lock (held here) when the CLI is killed."""
    root = trained / "champion_model"
    root.mkdir(exist_ok=True)
    log = home / "run.log"
    lock = os.open(root / ".promotion.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(log, "w") as out:
            proc = materialise(home, "champion_model", stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_until(lambda: "STEP_START" in log.read_text(), proc, log)
            time.sleep(1)  # in the step, blocked on the lock
            _kill_and_check(proc, home)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        os.close(lock)  # only now could a surviving step go on and publish
    time.sleep(2)
    assert not (root / "current.json").exists()
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []


def test_kill_9_during_inbox_predictions(
    trained: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while it scores a large inbox: no output folder, no pointer."""
    champion = materialise(home, "champion_model", {"ops": {"champion_model": {"config": {
        "accuracy_floor": 0.0}}}}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    assert champion.wait(timeout=300) == 0
    inbox = tmp_path / "inbox"
    scans = sorted((trained.parent / "images" / "test").rglob("*.jpeg"))
    for i in range(3000):  # distinct bytes (a tail after the JPEG's end): no verdict is reused
        (inbox / f"{i // 500}").mkdir(parents=True, exist_ok=True)
        data = scans[i % len(scans)].read_bytes() + i.to_bytes(4, "big")
        (inbox / f"{i // 500}" / f"scan-{i}.jpeg").write_bytes(data)
    monkeypatch.setenv("OCT_INBOX_DIR", str(inbox))
    log = home / "inbox.log"
    out_root = trained / "inbox_predictions"
    with open(log, "w") as out:
        proc = materialise(home, "inbox_predictions", stdout=out, stderr=subprocess.STDOUT)
    try:

        def building() -> bool:
            return out_root.is_dir() and any(".tmp-" in p.name for p in out_root.iterdir())

        _wait_until(building, proc, log)
        _kill_and_check(proc, home)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(2)
    assert [p.name for p in out_root.iterdir() if not p.name.startswith(".")] == []
