"""The shipped `deploy/dagster.yaml` against a real PostgreSQL: the graph materialises into it
from the CLI, and `dagster-daemon` runs the sensor and its run from it.

PostgreSQL comes from Debian (`.ci/install_ui.sh`) and is started here, on 127.0.0.1 only, in a
temporary folder, and stopped at the end. Without it (or without `dagster-postgres`) the tests
skip, or fail when `OCT_REQUIRE_CLUSTER_TESTS=1` (CI).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from oct_assets_tests.services.postgres import Postgres, unavailable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAST = {
    "ops": {
        "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},
        "trained_model": {"config": {"epochs": 2, "image_size": 32, "batch_size": 16}},
        "predictions_accuracy_above_floor": {"config": {"floor": 0.0}},
    },
    "execution": {"config": {"in_process": {}}},  # one process: 2 shared cores in CI
}


@dataclass
class Site:
    env: dict[str, str]
    home: Path
    data: Path


@pytest.fixture(scope="module")
def site(
    postgres: Postgres, tiny_tree_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """A DAGSTER_HOME holding the shipped deploy/dagster.yaml, unchanged, and its environment."""
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        unavailable("dagster-postgres is not installed (pip install -e '.[postgres]')")
    tmp = tmp_path_factory.mktemp("site")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    images = tmp / "images" / "OCT2017"
    shutil.copytree(tiny_tree_template, images, copy_function=shutil.copy2)
    env = {
        **os.environ,
        **postgres.env(),
        "DAGSTER_HOME": str(home),
        "OCT_DATA_DIR": str(tmp / "data"),
        "OCT_IMAGES_DIR": str(images),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key in ("DAGSTER_HOME", *postgres.env()):
            mp.setenv(key, env[key])  # so DagsterInstance.get() here reads the same instance
        yield Site(env, home, tmp / "data")


def cli(site: Site, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "dagster"), *args],
        cwd=REPO,
        env=site.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_graph_materialises_into_postgres(site: Site, postgres: Postgres) -> None:
    cli(site, "asset", "materialize", "-m", "oct_assets.definitions", "--select", "*predictions",
        "--config-json", json.dumps(FAST))  # fmt: skip
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        for name in ("raw_oct_images", "reduced_sample", "trained_model", "predictions"):
            event = instance.get_latest_materialization_event(AssetKey(name))
            assert event is not None and event.run_id == run.run_id, name
    # Straight from PostgreSQL: the run and its check evaluations are rows there.
    assert postgres.query("SELECT count(*) FROM runs") == [(1,)]
    [(checks,)] = postgres.query(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION'"
    )
    assert checks == 11


def test_daemon_runs_the_sensor_from_postgres(site: Site) -> None:
    """`dagster sensor start` records the sensor as running in PostgreSQL; `dagster-daemon`
    evaluates it, queues its run and launches it."""
    env = {**site.env, "OCT_REFRESH_THROUGH": "raw_oct_images"}  # keep the daemon's run tiny
    cli(site, "sensor", "start", "new_images_sensor", "-w", "workspace.yaml")
    log = site.home / "daemon.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with DagsterInstance.get() as instance:
            deadline = time.monotonic() + 180
            while True:
                runs = instance.get_runs(RunsFilter(tags={"oct/reason": "first tick"}))
                if runs and runs[0].status == DagsterRunStatus.SUCCESS:
                    break
                assert daemon.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, (
                    f"no successful sensor run after 180s: {[r.status for r in runs]}\n"
                    + log.read_text()[-4000:]
                )
                time.sleep(2)
            [run] = runs
            assert run.tags["dagster/sensor_name"] == "new_images_sensor"
            assert run.asset_selection == {AssetKey("raw_oct_images")}
            heartbeats = instance.get_daemon_heartbeats()
            assert {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= set(heartbeats)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
