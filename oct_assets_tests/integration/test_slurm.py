"""Slurm helpers against a real single-node Slurm, reached through the real sshd."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from oct_assets.cluster import slurm as sl
from oct_assets.cluster.accounting import job_usage
from oct_assets.cluster.batch_script import SlurmJobSpec
from oct_assets.cluster.errors import (
    SlurmJobFailedError,
    SlurmJobNotFoundError,
    SlurmJobUnschedulableError,
    SlurmSubmitError,
    SlurmWaitTimeoutError,
)
from oct_assets.cluster.ssh import SSHSession
from oct_assets_tests.services.slurm import AccountingCluster, SlurmCluster
from oct_assets_tests.services.sshd import SshServer

POLL_S = 0.3


@pytest.fixture
def slurm(
    slurm_cluster: SlurmCluster, sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> Iterator[SSHSession]:
    with sshd_server.resource() as resource:
        yield resource.session


def spec(name: str, command: str, **kwargs) -> SlurmJobSpec:
    return SlurmJobSpec(
        name=name, command=command, workdir=f"jobs/{name}", time="00:05:00", **kwargs
    )


def wait_for_state(session: SSHSession, job_id: int, states: set[str], timeout_s=30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = sl.job_status(session, job_id).state
        if state in states:
            return state
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} never reached {states}; last {state}")


@pytest.mark.cluster
def test_job_completes_and_streams_its_log(slurm: SSHSession) -> None:
    job = sl.submit(slurm, spec("hello", "echo hello-$SLURM_JOB_ID; python3 -c 'print(6 * 7)'"))
    lines: list[str] = []
    status = sl.wait(slurm, job, poll_interval_s=POLL_S, timeout_s=60, on_log_line=lines.append)
    assert (status.state, status.exit_code) == ("COMPLETED", 0)
    assert f"hello-{job.job_id}" in lines and "42" in lines
    assert job.log_path == slurm.resolve(f"jobs/hello/slurm-{job.job_id}.log")
    assert "42" in slurm.read_tail(job.log_path)


@pytest.mark.cluster
def test_failing_job_surfaces_state_and_log_tail(slurm: SSHSession) -> None:
    job = sl.submit(slurm, spec("fails", "echo about to fail >&2; exit 3"))
    with pytest.raises(SlurmJobFailedError) as info:
        sl.wait(slurm, job, poll_interval_s=POLL_S, timeout_s=60)
    assert (info.value.status.state, info.value.status.exit_code) == ("FAILED", 3)
    assert "about to fail" in info.value.log_tail
    assert "FAILED" in str(info.value) and "about to fail" in str(info.value)


@pytest.mark.cluster
def test_cancel_a_running_job(slurm: SSHSession) -> None:
    job = sl.submit(slurm, spec("sleeper", "sleep 300"))
    wait_for_state(slurm, job.job_id, {"RUNNING"})
    sl.cancel(slurm, job.job_id)
    assert wait_for_state(slurm, job.job_id, {"CANCELLED"}) == "CANCELLED"
    with pytest.raises(SlurmJobFailedError, match="CANCELLED"):
        sl.wait(slurm, job, poll_interval_s=POLL_S, timeout_s=30)


@pytest.mark.cluster
def test_wait_timeout_cancels_the_job(slurm: SSHSession) -> None:
    job = sl.submit(slurm, spec("overtime", "echo started; sleep 300"))
    with pytest.raises(SlurmWaitTimeoutError, match="still"):
        sl.wait(slurm, job, poll_interval_s=POLL_S, timeout_s=2)
    assert wait_for_state(slurm, job.job_id, {"CANCELLED"}) == "CANCELLED"


@pytest.mark.cluster
def test_rejected_submission_and_unknown_job(slurm: SSHSession) -> None:
    with pytest.raises(SlurmSubmitError, match="partition"):
        sl.submit(slurm, spec("nowhere", "true", partition="no_such_partition"))
    with pytest.raises(SlurmJobNotFoundError):
        sl.job_status(slurm, 987654)


@pytest.mark.cluster
def test_impossible_job_fails_fast_naming_the_reason(slurm: SSHSession) -> None:
    job = sl.submit(slurm, spec("toobig", "true", cpus_per_task=4096))
    started = time.monotonic()
    with pytest.raises(SlurmJobUnschedulableError, match="Reason=PartitionConfig"):
        sl.wait(slurm, job, poll_interval_s=POLL_S, timeout_s=600)
    assert time.monotonic() - started < 20  # not the whole timeout
    assert wait_for_state(slurm, job.job_id, {"CANCELLED"}) == "CANCELLED"


@pytest.mark.cluster
def test_submit_records_the_job_beside_its_folder(slurm: SSHSession) -> None:
    job = sl.submit(slurm, spec("recorded", "true"), record={"world_size": 2})
    found = sl.read_record(slurm, "jobs/recorded")
    assert found is not None
    recorded, fields = found
    assert recorded == job and fields["world_size"] == 2
    assert sl.read_record(slurm, "jobs/never-submitted") is None
    sl.wait(slurm, job, poll_interval_s=POLL_S, timeout_s=60)


@pytest.fixture
def accounted(
    accounting_cluster: AccountingCluster, no_cluster_env: pytest.MonkeyPatch
) -> Iterator[SSHSession]:
    """A session on the cluster that keeps accounting (MariaDB + slurmdbd)."""
    with accounting_cluster.sshd.resource() as resource:
        yield resource.session


# Three seconds of pure-Python CPU work holding 50 MiB (bytes * n writes every page).
BUSY = (
    'python3 -c \'import time; b = b"x" * (50 << 20); end = time.time() + 3; '
    "sum(1 for _ in iter(lambda: time.time() < end, False))'"
)


@pytest.mark.cluster
def test_usage_from_real_sacct(accounted: SSHSession) -> None:
    job = sl.submit(accounted, spec("accounted", BUSY))
    status = sl.wait(accounted, job, poll_interval_s=POLL_S, timeout_s=120)
    assert (status.state, status.exit_code) == ("COMPLETED", 0)
    usage = job_usage(accounted, job.job_id)
    assert usage["source"] == "sacct", usage
    assert (usage["state"], usage["exit_code"]) == ("COMPLETED", 0), usage
    assert usage["elapsed_s"] >= 2 and usage["nodes"] == 1 and usage["node_hours"] > 0, usage
    assert 0 < usage["cpu_efficiency"] <= 1.5, usage  # TotalCPU over elapsed x AllocCPUS
    assert usage["peak_memory_bytes"] >= 50 * 2**20, usage  # MaxRSS of the batch step
    assert usage["gpus"] == 0 and usage["gpu_hours"] == 0 and "why" not in usage


@pytest.mark.cluster
def test_failed_job_usage_from_real_sacct(accounted: SSHSession) -> None:
    job = sl.submit(accounted, spec("accounted-fails", "exit 3"))
    with pytest.raises(SlurmJobFailedError):
        sl.wait(accounted, job, poll_interval_s=POLL_S, timeout_s=120)
    usage = job_usage(accounted, job.job_id)
    assert (usage["source"], usage["state"], usage["exit_code"]) == ("sacct", "FAILED", 3), usage
