"""Cluster training jobs that Slurm stops and starts again, on the real sshd and Slurm: a
`scontrol requeue` mid-training, a time limit shorter than the training, and `max_restarts`.
Every one ends (or resumes) with a `model.pt` byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance

from oct_assets.cluster import slurm as sl
from oct_assets.cluster.accounting import job_usage
from oct_assets.cluster.batch_script import SlurmJobSpec
from oct_assets.cluster.errors import SlurmRestartLimitError
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.train import train
from oct_assets.resources.io_manager import pointer_salt
from oct_assets.store.salt import salted_dir
from oct_assets_tests.integration.test_cluster_assets import (
    QUICK_JOB,
    TINY_TRAIN,
    meta,
    node_python,
    run_cluster,
    sample_instance,  # noqa: F401 - a fixture
)
from oct_assets_tests.services.slurm import AccountingCluster, SlurmCluster
from oct_assets_tests.services.sshd import SshServer

pytestmark = pytest.mark.cluster

# About 0.1 s an epoch on this machine's two cores: long enough to requeue it mid-training.
REQUEUED_TRAIN = {**TINY_TRAIN, "epochs": 40, "image_size": 64}


class Reference:
    """An uninterrupted run of the same training on the same sample, here, in a process of its
    own while the cluster job runs (each trains on one thread of the two cores)."""

    def __init__(self, training: dict, tmp_path: Path) -> None:
        sample = salted_dir("reduced_sample", pointer_salt("reduced_sample"))
        config = tmp_path / "reference.json"
        config.write_text(json.dumps(TrainConfig.from_dict(training).to_dict()))
        self.out = tmp_path / "reference"
        args = ["--sample", str(sample), "--out", str(self.out), "--config", str(config)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oct_assets.ml.train", *args],
            env={**os.environ, "OCT_TRAIN_LOG_LEVEL": "WARNING"},
        )

    def model_pt(self) -> bytes:
        assert self.proc.wait(timeout=300) == 0
        return (self.out / "model.pt").read_bytes()


def epochs_lasting(seconds: float, training: dict, tmp_path: Path) -> int:
    """How many epochs of `training` last about `seconds` on this machine (one thread, like
    the job): timed on a few epochs, so a faster machine still outlasts the time limit."""
    sample = salted_dir("reduced_sample", pointer_salt("reduced_sample"))
    config = TrainConfig.from_dict({**training, "epochs": 6})
    history = train(sample, tmp_path / "timing", config)["history"]
    per_epoch = statistics.median(epoch["seconds"] for epoch in history[1:])
    return max(20, min(1000, math.ceil(seconds / per_epoch)))


class Requeuer(threading.Thread):
    """Waits for the one running job to log the end of epoch `k`, then `scontrol requeue`s it."""

    def __init__(self, slurm: SlurmCluster, server: SshServer, k: int) -> None:
        super().__init__(daemon=True)
        self.slurm, self.server, self.k = slurm, server, k
        self.job_id: int | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            running = self.slurm.command("squeue", "-h", "-t", "R", "-o", "%i").stdout.split()
            for job_id in running:
                for log in self.server.remote_dir.glob(f"jobs/*/slurm-{job_id}.log"):
                    if f'"epoch": {self.k},' in log.read_text():
                        done = self.slurm.command("scontrol", "requeue", job_id)
                        self.job_id = int(job_id)
                        self.error = done.stderr if done.returncode else None
                        return
            time.sleep(0.1)
        self.error = f"no job logged epoch {self.k} within 180 s"


def job_log(server: SshServer, model: dict) -> str:
    return (server.remote_dir / "jobs" / model["salt"] / f"slurm-{model['job_id']}.log").read_text()


def streamed(instance: DagsterInstance, run_id: str, job_id: int) -> list[str]:
    """The job's log lines as the run log got them."""
    prefix = f"[slurm {job_id}] "
    return [
        e.message.split(prefix, 1)[1]
        for e in instance.all_logs(run_id)
        if e.message and prefix in e.message
    ]


def resumed_epochs(log: str) -> list[int]:
    return [epoch for kind, epoch in stops_and_resumes(log) if kind == "resume"]


def stops_and_resumes(log: str) -> list[tuple[str, int]]:
    """The log's checkpoint stops and resumes, in order: ("stop", epoch) or ("resume", epoch)."""
    pattern = r"stopped by SIGTERM in epoch (\d+) at step|resuming from \S+ in epoch (\d+) at step"
    return [
        ("stop", int(m[1])) if m[1] else ("resume", int(m[2])) for m in re.finditer(pattern, log)
    ]


def test_requeued_job_resumes_under_one_id_to_an_identical_model(
    sample_instance: DagsterInstance,  # noqa: F811
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
    tmp_path: Path,
) -> None:
    training = {**REQUEUED_TRAIN, "seed": 31}
    reference = Reference(training, tmp_path)
    config = {"mode": "train", "training": training, "slurm": {**node_python(), **QUICK_JOB}}
    k = 3
    requeuer = Requeuer(slurm_cluster, sshd_server, k)
    requeuer.start()
    result = run_cluster(sample_instance, sshd_server, config)
    requeuer.join(timeout=5)
    assert requeuer.job_id is not None and requeuer.error is None, requeuer.error
    model = meta(result, "cluster_model")
    print("restarts:", model["restarts"], "usage:", model["slurm_usage"])  # figures, with -s
    assert model["job_id"] == requeuer.job_id and model["slurm_state"] == "COMPLETED"
    assert model["restarts"]["restarts"] == 1 and model["restarts"]["runs_in_log"] == 2
    assert model["restarts"]["epochs_redone"] == 0  # resumed at its last checkpoint
    assert model["restarts"]["time_lost_s"] > 0
    assert model["slurm_usage"]["restarts"] == 1  # from scontrol's Restarts=
    log = job_log(sshd_server, model)
    assert "(restart 0)" in log and "(restart 1)" in log
    [resumed] = resumed_epochs(log)
    assert resumed >= k  # not epoch 1
    # One job, one log, streamed once: no line of either run lost or repeated.
    assert streamed(sample_instance, result.run_id, model["job_id"]) == log.splitlines()
    assert len(list((sshd_server.remote_dir / "jobs" / model["salt"]).glob("slurm-*.log"))) == 1
    assert not (sshd_server.remote_dir / "checkpoints" / model["salt"]).exists()
    cluster_pt = (Path(model["path"]) / "model.pt").read_bytes()
    assert cluster_pt == reference.model_pt()


def test_job_longer_than_its_time_limit_requeues_itself_and_finishes(
    sample_instance: DagsterInstance,  # noqa: F811
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
    tmp_path: Path,
) -> None:
    """`time: 1` (a minute, Slurm's finest) and a 45 s warning: the trainer checkpoints, the
    job requeues itself and resumes. slurmctld looks at time limits only every 30 s or so, so
    the warning comes anywhere from some 10 s to 45 s into a run (measured: 10-15 s on a fresh
    slurmctld, 22-27 s on one started earlier): a training of 55 s of epochs (however fast this
    machine) outlasts the latest warning, so it needs two runs or more, each of the same job."""
    training = {**TINY_TRAIN, "image_size": 128, "seed": 32}
    training["epochs"] = epochs_lasting(55.0, training, tmp_path)
    reference = Reference(training, tmp_path)
    # Each run trains at least the few seconds between its start and the earliest warning.
    slurm = {**node_python(), **QUICK_JOB, "time": "1", "signal_margin_s": 45, "max_restarts": 15}
    result = run_cluster(
        sample_instance, sshd_server, {"mode": "train", "training": training, "slurm": slurm}
    )
    model = meta(result, "cluster_model")
    print("restarts:", model["restarts"], "usage:", model["slurm_usage"])  # figures, with -s
    assert model["slurm_state"] == "COMPLETED"
    restarts = model["restarts"]["restarts"]
    assert restarts >= 1 and model["slurm_usage"]["restarts"] == restarts
    log = job_log(sshd_server, model)
    # A warning that comes once the model is written (after `done`) has nothing left to stop:
    # the trainer exits 0 and the job completes without a requeue (ml/checkpoint.py).
    warning = "SIGUSR2: time limit in 45 s or less"
    late = log.count(warning, max(0, log.rfind(" INFO done: ")))
    assert late <= 1 and log.count(warning) == restarts + late
    assert log.count(f"requeueing job {model['job_id']}") == restarts
    # Slurm may send the warning up to a minute early: one that comes before a run's trainer
    # has started stops it without a checkpoint of its own, and the next run resumes from the
    # last one written (or starts afresh if there is none). So every run that stopped at a
    # checkpoint is resumed from it, where it stopped, and every resume is from the last stop.
    events = stops_and_resumes(log)
    stops = [epoch for kind, epoch in events if kind == "stop"]
    assert 1 <= len(stops) <= restarts
    last_stop = None
    for i, (kind, epoch) in enumerate(events):
        if kind == "stop":
            assert events[i + 1 : i + 2] == [("resume", epoch)], events
            last_stop = epoch
        else:
            assert epoch == last_stop, events
    assert model["restarts"]["epochs_redone"] == 0  # each run stopped at a checkpoint
    assert (Path(model["path"]) / "model.pt").read_bytes() == reference.model_pt()


def test_max_restarts_ends_the_job_and_resubmit_failed_resumes_it(
    sample_instance: DagsterInstance,  # noqa: F811
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
    tmp_path: Path,
) -> None:
    """Started again more often than `max_restarts` allows, a job is cancelled with an error
    naming the setting; `resubmit_failed: true` then submits a new job that resumes from the
    checkpoint the first one left (not from epoch 1), to the same model."""
    training = {**REQUEUED_TRAIN, "seed": 33}
    reference = Reference(training, tmp_path)
    slurm = {**node_python(), **QUICK_JOB, "max_restarts": 0}
    config = {"mode": "train", "training": training, "slurm": slurm}
    requeuer = Requeuer(slurm_cluster, sshd_server, 3)
    requeuer.start()
    failed = run_cluster(sample_instance, sshd_server, config, raise_on_error=False)
    requeuer.join(timeout=5)
    assert requeuer.job_id is not None and requeuer.error is None, requeuer.error
    error = failed.failure_data_for_node("cluster_model").error.to_string()
    assert "slurm.max_restarts=0" in error and f"Slurm job {requeuer.job_id}" in error
    shown = slurm_cluster.command("scontrol", "show", "job", str(requeuer.job_id)).stdout
    assert "JobState=CANCELLED" in shown  # cancelled, not left pending for a second run

    retried = run_cluster(
        sample_instance,
        sshd_server,
        {**config, "slurm": {**slurm, "max_restarts": 3}, "resubmit_failed": True},
    )
    model = meta(retried, "cluster_model")
    assert model["job_id"] != requeuer.job_id and model["restarts"]["restarts"] == 0
    [resumed] = resumed_epochs(job_log(sshd_server, model))
    assert resumed >= 3  # from the first job's checkpoint
    assert (Path(model["path"]) / "model.pt").read_bytes() == reference.model_pt()


def test_two_task_job_stops_every_rank_through_srun_and_torchrun(
    sample_instance: DagsterInstance,  # noqa: F811
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
    tmp_path: Path,
) -> None:
    """The time-limit warning reaches the batch shell alone (`B:USR2`); its TERM must cross
    srun and torchrun to both ranks, which checkpoint at the same step. The warning is sent
    here by the job itself once epoch 3 is logged, as Slurm would before the time limit."""
    training = {**REQUEUED_TRAIN, "seed": 34}
    warn = (
        '[ -n "${SLURM_RESTART_COUNT:-}" ] || ( until grep -qs \'"epoch": 3,\''
        ' "slurm-$SLURM_JOB_ID.log"; do sleep 0.2; done; kill -USR2 $$ ) &'
    )
    python = node_python()
    slurm = {**QUICK_JOB, **python, "ntasks_per_node": 2, "setup": [*python["setup"], warn]}
    result = run_cluster(
        sample_instance, sshd_server, {"mode": "train", "training": training, "slurm": slurm}
    )
    model = meta(result, "cluster_model")
    assert model["world_size"] == 2 and model["restarts"]["restarts"] == 1
    log = job_log(sshd_server, model)
    assert "SIGUSR2" in log and f"requeueing job {model['job_id']} (restart 1)" in log
    stops = re.findall(r"rank (\d) WARNING stopped by SIGTERM in epoch (\d+) at step (\d+)", log)
    told = [line for line in log.splitlines() if '"epoch"' not in line]
    assert sorted(rank for rank, *_ in stops) == ["0", "1"], "\n".join(told)
    assert len({tuple(at) for _, *at in stops}) == 1  # both at the same step
    [resumed] = resumed_epochs(log)
    assert resumed >= 3
    # The same training uninterrupted, two tasks again (another salt folder, same weights).
    from oct_assets.cluster.settings import SlurmSettings
    from oct_assets.cluster.training import train_for_salt

    with sshd_server.resource() as resource:
        train_for_salt(
            resource.session,
            salt=f"reference-{model['salt']}",
            sample_dir=salted_dir("reduced_sample", pointer_salt("reduced_sample")),
            sample_salt=pointer_salt("reduced_sample"),
            training=TrainConfig.from_dict(training).to_dict(),
            slurm=SlurmSettings.from_dict({**slurm, "setup": python["setup"]}),
            dest=tmp_path / "reference",
            log=lambda line: None,
            on_log_line=lambda job_id, line: None,
        )
    reference = (tmp_path / "reference" / "model.pt").read_bytes()
    assert (Path(model["path"]) / "model.pt").read_bytes() == reference


def test_usage_of_a_requeued_job_from_real_sacct(
    accounting_cluster: AccountingCluster, no_cluster_env: pytest.MonkeyPatch
) -> None:
    """sacct keeps one record per run (`--duplicates`): the first closed REQUEUED."""
    with accounting_cluster.sshd.resource() as resource:
        session = resource.session
        spec = SlurmJobSpec(
            name="requeued",
            command="sleep 3",
            workdir="jobs/requeued",
            time="00:05:00",
            signal_margin_s=60,
            max_restarts=2,
        )
        job = sl.submit(session, spec)
        cluster = accounting_cluster.slurm
        deadline = time.monotonic() + 60
        while sl.job_status(session, job.job_id).state != "RUNNING":
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.2)
        assert cluster.command("scontrol", "requeue", str(job.job_id)).returncode == 0
        status = sl.wait(session, job, poll_interval_s=0.3, timeout_s=120, max_restarts=2)
        assert (status.state, status.restarts) == ("COMPLETED", 1)
        usage = job_usage(session, job.job_id)
    assert (usage["source"], usage["state"], usage["exit_code"]) == ("sacct", "COMPLETED", 0)
    assert usage["restarts"] == 1 and "why" not in usage, usage
    assert usage["elapsed_s"] >= 3, usage  # both runs' time (the second slept 3 s)
    assert usage["gpu_util_avg_percent"] is None  # no GPU, nothing gathered


@pytest.mark.usefixtures("slurm_cluster", "no_cluster_env")
def test_a_job_stopped_on_every_run_fails_naming_max_restarts(sshd_server: SshServer) -> None:
    """Each run is warned at once (as by a time limit too short to make progress): the job
    requeues itself `max_restarts` times, then fails instead of looping, naming the setting."""
    spec = SlurmJobSpec(
        name="always-warned",
        command="sleep 60",
        workdir="jobs/always-warned",
        time="00:05:00",
        setup=["kill -USR2 $$"],  # the warning, before the step starts
        signal_margin_s=60,
        max_restarts=1,
    )
    with sshd_server.resource() as resource:
        session = resource.session
        job = sl.submit(session, spec)
        with pytest.raises(SlurmRestartLimitError, match=r"slurm\.max_restarts=1") as info:
            sl.wait(session, job, poll_interval_s=0.3, timeout_s=120, max_restarts=1)
        log = session.read_tail(job.log_path)
    assert (info.value.status.state, info.value.status.restarts) == ("FAILED", 1)
    assert "requeueing job" in log and "not requeueing: started again 1 times" in log
