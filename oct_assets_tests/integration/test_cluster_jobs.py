"""Cluster training jobs that survive the Dagster process: kill -9 and follow, terminate and
cancel, failed jobs reported and resubmitted only when asked (real sshd and Slurm)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.integration.test_cluster_assets import (
    QUICK_JOB,
    SAMPLE,
    TINY_TRAIN,
    meta,
    node_python,
)
from oct_assets_tests.services.slurm import SlurmCluster
from oct_assets_tests.services.sshd import SshServer

pytestmark = pytest.mark.cluster


@pytest.fixture
def home_instance(
    tiny_tree: Path, data_env: Path, tmp_path: Path, no_cluster_env: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    """A persistent instance (DAGSTER_HOME) that a CLI run and this test share, with the sample."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    no_cluster_env.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        materialize(
            LOCAL_GRAPH[:2],
            instance=instance,
            resources={"io_manager": LatestArtifactIOManager()},
            run_config={"ops": {"reduced_sample": {"config": SAMPLE}}},
        )
        yield instance


def cluster_env(server: SshServer) -> dict[str, str]:
    settings = {
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
        "USER": server.user,
        "KEY_FILE": str(server.keys["ed25519"]),
        "KNOWN_HOSTS": str(server.known_hosts),
        "REMOTE_DIR": str(server.remote_dir),
    }
    return {f"OCT_CLUSTER_{k}": v for k, v in settings.items()}


def train_config(seed: int, sleep_s: int) -> dict:
    """A tiny training whose job first sleeps, so that it is surely running when we act."""
    slurm = {**node_python(), **QUICK_JOB}
    slurm["setup"] = [f"sleep {sleep_s}", *slurm["setup"]]
    return {"mode": "train", "training": {**TINY_TRAIN, "seed": seed}, "slurm": slurm}


def start_cli_run(server: SshServer, config: dict, log: Path) -> subprocess.Popen:
    """`dagster asset materialize --select cluster_model` in its own process group."""
    cli = Path(sys.executable).with_name("dagster")
    run_config = {"ops": {"cluster_model": {"config": config}}}
    args = ["asset", "materialize", "-m", "oct_assets.definitions", "--select", "cluster_model"]
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(cli), *args, "--config-json", json.dumps(run_config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **cluster_env(server)},
            start_new_session=True,
        )


def queue(slurm: SlurmCluster) -> list[tuple[int, str]]:
    out = slurm.command("squeue", "-h", "-o", "%i %T").stdout.split("\n")
    return [(int(line.split()[0]), line.split()[1]) for line in out if line.strip()]


def wait_until(what: str, check, proc: subprocess.Popen | None, log: Path, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        alive = proc is None or proc.poll() is None
        assert alive and time.monotonic() < deadline, f"{what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)
    return value


def find_record(server: SshServer, job_id: int) -> Path | None:
    for record in server.remote_dir.glob("jobs/*/job.json"):
        if json.loads(record.read_text())["job_id"] == job_id:
            return record
    return None


def running_job(slurm: SlurmCluster) -> int | None:
    jobs = queue(slurm)
    return jobs[0][0] if len(jobs) == 1 and jobs[0][1] == "RUNNING" else None


def test_killed_run_is_followed_not_resubmitted(
    home_instance: DagsterInstance,
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    tmp_path: Path,
) -> None:
    config = train_config(seed=21, sleep_s=12)
    log = tmp_path / "first.log"
    proc = start_cli_run(sshd_server, config, log)
    try:
        job_id = wait_until("job running", lambda: running_job(slurm_cluster), proc, log)
        record = wait_until("job recorded", lambda: find_record(sshd_server, job_id), proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the Dagster process dies without any cleanup
        proc.wait()
    assert queue(slurm_cluster) == [(job_id, "RUNNING")]  # the job outlives its submitter

    result = run_model(home_instance, sshd_server, config)
    model = meta(result, "cluster_model")
    assert model["job_id"] == job_id and model["job_followed"] is True
    assert model["slurm_state"] == "COMPLETED"
    assert len(list(record.parent.glob("slurm-*.log"))) == 1  # one job, never two
    salt = record.parent.name
    assert not list(sshd_server.remote_dir.glob(f"models/{salt}.partial-*"))  # published


def test_terminating_the_run_cancels_its_job(
    home_instance: DagsterInstance,
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    tmp_path: Path,
) -> None:
    config = train_config(seed=22, sleep_s=60)
    log = tmp_path / "terminated.log"
    proc = start_cli_run(sshd_server, config, log)
    try:
        job_id = wait_until("job running", lambda: running_job(slurm_cluster), proc, log)
        proc.send_signal(signal.SIGTERM)  # what terminating a run sends its process
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    wait_until("queue empty", lambda: not queue(slurm_cluster), None, log, timeout_s=30)
    state = slurm_cluster.command("scontrol", "show", "job", str(job_id)).stdout
    assert "JobState=CANCELLED" in state
    # The cancelled job's record is moved aside: the next run submits afresh (not an error).
    assert list(sshd_server.remote_dir.glob(f"jobs/*/job-{job_id}.cancelled.json"))


def test_failed_job_is_reported_and_resubmitted_only_when_asked(
    home_instance: DagsterInstance, slurm_cluster: SlurmCluster, sshd_server: SshServer
) -> None:
    config = {
        "mode": "train",
        "training": {**TINY_TRAIN, "seed": 23},
        "slurm": {**QUICK_JOB, "python": "/no/such/python", "timeout_s": 120},
    }
    first = run_model(home_instance, sshd_server, config, raise_on_error=False)
    first_error = first.failure_data_for_node("cluster_model").error.to_string()
    assert "FAILED" in first_error
    again = run_model(home_instance, sshd_server, config, raise_on_error=False)
    error = again.failure_data_for_node("cluster_model").error.to_string()
    assert "FAILED" in error and "resubmit_failed" in error and "/no/such/python" in error
    assert queue(slurm_cluster) == []
    retried = run_model(
        home_instance, sshd_server, {**config, "resubmit_failed": True}, raise_on_error=False
    )
    error = retried.failure_data_for_node("cluster_model").error.to_string()
    assert "resubmit_failed" not in error and "FAILED" in error  # a new job ran and failed
    assert job_id_in(error) != job_id_in(first_error)


def job_id_in(error: str) -> int:
    return int(re.search(r"Slurm job (\d+)", error).group(1))


def run_model(instance: DagsterInstance, server: SshServer, config: dict, **kwargs):
    """Materialise cluster_model alone; the sample comes from the instance."""
    return materialize(
        [*LOCAL_GRAPH[:2], cluster_model],
        selection=[cluster_model.key],
        instance=instance,
        resources={"io_manager": LatestArtifactIOManager(), "cluster": server.resource()},
        run_config={"ops": {"cluster_model": {"config": config}}},
        **kwargs,
    )
