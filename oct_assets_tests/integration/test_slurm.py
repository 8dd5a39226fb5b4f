"""Slurm helpers against a real single-node Slurm, reached through the real sshd."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from oct_assets.cluster import slurm as sl
from oct_assets.cluster.accounting import job_usage
from oct_assets.cluster.batch_script import SlurmJobSpec, render_batch_script
from oct_assets.cluster.errors import (
    SlurmJobFailedError,
    SlurmJobNotFoundError,
    SlurmJobUnschedulableError,
    SlurmSubmitError,
    SlurmWaitTimeoutError,
)
from oct_assets.cluster.ssh import SSHSession
from oct_assets.cluster.training import launch, procs_per_node
from oct_assets.cluster.types import CommandResult
from oct_assets_tests.fixtures_cluster import AccountingCluster, SlurmCluster, SshServer

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


def test_render_batch_script() -> None:
    text = render_batch_script(
        SlurmJobSpec(
            name="train",
            command="python -m oct_assets.ml.train --sample s --out o --config c.json",
            workdir="/scratch/u/run1",
            partition="gpu",
            time="0-02:00:00",
            cpus_per_task=8,
            mem="16G",
            gres="gpu:1",
            setup=("source /scratch/u/venv/bin/activate",),
            extra_directives=("--account=proj42",),
        )
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in (
        "--job-name=train",
        "--chdir=/scratch/u/run1",
        "--output=/scratch/u/run1/slurm-%j.log",
        "--partition=gpu",
        "--time=0-02:00:00",
        "--cpus-per-task=8",
        "--mem=16G",
        "--gres=gpu:1",
        "--account=proj42",
    ):
        assert f"#SBATCH {directive}" in lines
    assert lines.index("source /scratch/u/venv/bin/activate") < len(lines) - 1
    assert lines[-1].startswith("python -m oct_assets.ml.train")


def test_spec_validation_names_every_bad_field() -> None:
    with pytest.raises(ValueError, match=r"name=.*time=.*mem=") as info:
        SlurmJobSpec(name="two words", command="true", workdir="/w", time="soon", mem="lots")
    assert "cpus_per_task" not in str(info.value)


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


def test_render_multi_node_gpu_job_and_its_torchrun_launch() -> None:
    setup, command = launch("python3", "--sample s --out o", nodes=4, per_node=8)
    text = render_batch_script(
        SlurmJobSpec(
            name="ddp",
            command=command,
            workdir="/scratch/u/ddp",
            nodes=4,
            ntasks_per_node=1,
            gpus_per_node=8,
            cpus_per_task=8,
            account="proj42",
            qos="normal",
            constraint="a100&ib",
            extra_directives=("--exclusive",),
            setup=("module load cuda", *setup),
        )
    )
    lines = text.splitlines()
    for directive in (
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--account=proj42",
        "--qos=normal",
        "--constraint='a100&ib'",
        "--exclusive",
    ):
        assert f"#SBATCH {directive}" in lines
    assert 'OCT_RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)' in lines
    assert lines[-1].startswith("srun --nodes=$SLURM_NNODES --ntasks=$SLURM_NNODES")
    assert "-m torch.distributed.run --nnodes $SLURM_NNODES --nproc-per-node 8" in lines[-1]
    assert "--rdzv-backend c10d --rdzv-endpoint $OCT_RDZV_HOST:$OCT_RDZV_PORT" in lines[-1]
    assert lines[-1].endswith("-m oct_assets.ml.train --sample s --out o")
    # One process stays plain python; one node meets on loopback.
    assert launch("py", "--x", nodes=1, per_node=1) == ([], "py -m oct_assets.ml.train --x")
    assert "OCT_RDZV_HOST=127.0.0.1" in launch("py", "--x", nodes=1, per_node=2)[0]
    assert procs_per_node(ntasks_per_node=2, gpus_per_node=0) == 2
    assert procs_per_node(ntasks_per_node=1, gpus_per_node=4) == 4
    with pytest.raises(ValueError, match="gpus_per_node or gres"):
        SlurmJobSpec(name="x", command="true", workdir="/w", gpus_per_node=1, gres="gpu:1")


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


class _Shell:
    """Answers sacct like a two-node GPU cluster (which the test cluster is not)."""

    def run(self, command: str, **kwargs) -> CommandResult:
        assert command.startswith("sacct ")
        out = (
            "77|COMPLETED|0:0|3600|01:30:00||2|16|billing=16,cpu=16,gres/gpu=4,mem=64G,node=2\n"
            "77.batch|COMPLETED|0:0|3600|00:01:00|1200M|1|8|cpu=8,mem=32G,node=1\n"
            "77.0|COMPLETED|0:0|3590|01:29:00|7.5G|2|16|cpu=16,gres/gpu=4,node=2\n"
        )
        return CommandResult(command, 0, out, "")


def test_usage_from_sacct() -> None:
    usage = job_usage(_Shell(), 77)
    assert usage["source"] == "sacct" and usage["state"] == "COMPLETED"
    assert usage["exit_code"] == 0 and usage["elapsed_s"] == 3600
    assert usage["node_hours"] == 2 and usage["gpu_hours"] == 4
    assert usage["cpu_efficiency"] == round(5400 / (3600 * 16), 4)
    assert usage["peak_memory_bytes"] == int(7.5 * 2**30)


class _SettlingShell:
    """sacct lags scontrol: the first answer still says RUNNING, with no CPU time yet."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, command: str, **kwargs) -> CommandResult:
        self.calls += 1
        state, cpu, rss = (
            ("RUNNING", "00:00:00", "") if self.calls == 1 else ("COMPLETED", "00:00:09", "5M")
        )
        out = f"8|{state}|0:0|10|{cpu}||1|1|cpu=1,node=1\n8.batch|{state}|0:0|10|{cpu}|{rss}|1|1|\n"
        return CommandResult(command, 0, out, "")


def test_usage_waits_for_the_final_sacct_record() -> None:
    shell = _SettlingShell()
    usage = job_usage(shell, 8)
    assert shell.calls == 2 and usage["state"] == "COMPLETED" and "why" not in usage
    assert usage["cpu_efficiency"] == 0.9 and usage["peak_memory_bytes"] == 5 * 2**20
    stuck = job_usage(_SettlingShell(), 8, settle_s=0)  # asked once: what sacct has, and why
    assert stuck["state"] == "RUNNING" and "not final" in stuck["why"]


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
