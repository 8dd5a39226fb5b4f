"""The requeueing batch script's signal handling, run by bash without Slurm: `scontrol` is a
stand-in that records its arguments, and the step is a shell that "checkpoints" on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from oct_assets.cluster.batch_script import SlurmJobSpec, render_batch_script

# Stands in for the trainer: on SIGTERM it checkpoints and exits 128 + 15, as train.py does.
STEP = (
    'bash -c \'trap "echo step-checkpointed; exit 143" TERM; echo step-started;'
    " while :; do sleep 0.05; done'"
)


def script(
    tmp_path: Path, command: str = STEP, max_restarts: int = 2, requeue_exit: int = 0
) -> Path:
    spec = SlurmJobSpec(
        name="t",
        command=command,
        workdir=str(tmp_path),
        signal_margin_s=60,
        max_restarts=max_restarts,
        finish=[f"touch {tmp_path / 'published'}"],
    )
    path = tmp_path / "job.sbatch"
    path.write_text(render_batch_script(spec))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\nexit {requeue_exit}\n')
    fake.chmod(0o755)
    return path


def start(tmp_path: Path, path: Path, restarts: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "42",
        "SLURM_RESTART_COUNT": str(restarts),
    }
    log = open(tmp_path / "job.log", "w")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen(["bash", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "job.log").read_text()


def wait_started(proc: subprocess.Popen, tmp_path: Path) -> None:
    deadline = time.monotonic() + 20
    while "step-started" not in log_of(tmp_path):
        assert proc.poll() is None and time.monotonic() < deadline, log_of(tmp_path)
        time.sleep(0.05)


def calls(tmp_path: Path) -> list[str]:
    found = tmp_path / "scontrol.calls"
    return found.read_text().splitlines() if found.exists() else []


def test_warning_signal_checkpoints_the_step_then_requeues(tmp_path: Path) -> None:
    proc = start(tmp_path, script(tmp_path), restarts=1)
    wait_started(proc, tmp_path)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=20) == 0, log_of(tmp_path)
    log = log_of(tmp_path)
    assert "step-checkpointed" in log and "requeueing job 42 (restart 2)" in log
    assert log.index("step-checkpointed") < log.index("requeueing")  # the step stopped first
    assert calls(tmp_path) == ["requeue 42"]
    assert not (tmp_path / "published").exists()


def test_no_requeue_past_max_restarts(tmp_path: Path) -> None:
    proc = start(tmp_path, script(tmp_path, max_restarts=2), restarts=2)
    wait_started(proc, tmp_path)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=20) == 1, log_of(tmp_path)
    assert "not requeueing: started again 2 times, slurm.max_restarts=2" in log_of(tmp_path)
    assert "step-checkpointed" in log_of(tmp_path) and calls(tmp_path) == []


def test_sigterm_stops_the_step_without_requeueing(tmp_path: Path) -> None:
    """Slurm's own requeue, preemption or scancel: the step checkpoints, Slurm decides."""
    proc = start(tmp_path, script(tmp_path), restarts=0)
    wait_started(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143, log_of(tmp_path)
    assert "step-checkpointed" in log_of(tmp_path) and calls(tmp_path) == []
    assert not (tmp_path / "published").exists()


@pytest.mark.parametrize("code", [0, 3])
def test_a_step_that_ends_publishes_only_on_success(tmp_path: Path, code: int) -> None:
    proc = start(tmp_path, script(tmp_path, command=f"echo step-started; exit {code}"), 0)
    assert proc.wait(timeout=20) == code, log_of(tmp_path)
    assert (tmp_path / "published").exists() == (code == 0)
    assert "(restart 0)" in log_of(tmp_path) and calls(tmp_path) == []


def test_an_srun_step_is_stopped_through_slurm_never_by_signalling_srun() -> None:
    """srun answers SIGTERM by killing its tasks ("forcing job termination"): its tasks get
    the TERM from Slurm instead, which torchrun passes on to the ranks."""
    spec = SlurmJobSpec(
        name="t", command="srun x", workdir="/w", signal_margin_s=60, srun_step=True
    )
    text = render_batch_script(spec)
    assert 'scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null || true' in text
    assert 'kill -TERM "$oct_step"' not in text


def test_a_refused_requeue_fails_the_job_keeping_the_checkpoint(tmp_path: Path) -> None:
    proc = start(tmp_path, script(tmp_path, requeue_exit=1), restarts=0)
    wait_started(proc, tmp_path)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=20) == 1, log_of(tmp_path)
    assert "step-checkpointed" in log_of(tmp_path) and calls(tmp_path) == ["requeue 42"]
    assert "scontrol requeue failed" in log_of(tmp_path)
