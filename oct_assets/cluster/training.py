"""A model trained on the cluster for one salt, no Dagster: `train_for_salt` reuses the model
the cluster already has, follows the job already running for the salt, or stages the sample and
the code and submits one (`jobs.run_or_follow`); then it fetches the model.

The job runs `python -m oct_assets.ml.train` (`launch.py`) with the uploaded code first on its
`PYTHONPATH`, writes into its own `<model>.partial-<job id>` folder and publishes it with one
`mv`; the folders it uses are the cluster layout's (`layout.py`). It checkpoints into
`checkpoints/<salt>/`, which outlives requeues, restarts and resubmissions of the salt's jobs
(each resumes from it) and goes once the model is published.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oct_assets.cluster import staging, transfer
from oct_assets.cluster.accounting import job_usage
from oct_assets.cluster.batch_script import SlurmJobSpec
from oct_assets.cluster.code import upload_ml_code
from oct_assets.cluster.environment import DEFAULT_PYTHON, TrainingEnvironment, for_job
from oct_assets.cluster.jobs import partial_dir, run_or_follow
from oct_assets.cluster.launch import launch, procs_per_node
from oct_assets.cluster.layout import RemoteLayout
from oct_assets.cluster.models import download_model
from oct_assets.cluster.restarts import RestartCost, restart_cost
from oct_assets.cluster.settings import SlurmSettings
from oct_assets.cluster.ssh import SSHSession
from oct_assets.cluster.staging import StageResult
from oct_assets.cluster.types import SlurmJob, SlurmJobStatus
from oct_assets.contracts.formats import IMAGES_CSV, MODEL_JSON, TRAIN_CONFIG_JSON, read_csv_rows


@dataclass(frozen=True)
class TrainedOnCluster:
    """Where the model is on the cluster and how it got there.

    `job` is None when the cluster already had the model; `staged` is None unless this call
    staged the sample (a followed job's caller staged it).
    """

    remote: str
    world_size: int
    job: SlurmJob | None = None
    status: SlurmJobStatus | None = None
    followed: bool = False
    usage: dict[str, Any] | None = None
    staged: StageResult | None = None
    environment: TrainingEnvironment | None = None  # None: the user's own python
    restarts: RestartCost | None = None  # None when no job ran


def train_for_salt(
    session: SSHSession,
    *,
    salt: str,
    sample_dir: Path,
    sample_salt: str,
    training: dict[str, Any],
    slurm: SlurmSettings,
    dest: Path,
    remote_image_root: str | None = None,
    resubmit_failed: bool = False,
    record: dict[str, Any] | None = None,
    log: Callable[[str], None],
    on_log_line: Callable[[int, str], None],
) -> TrainedOnCluster:
    """Put the model of `salt` into `dest`, training it on the cluster unless it is there.

    `training` is the trainer's config (`TrainConfig.to_dict()`), `record` extra fields of the
    job's record (e.g. the submitting run's id); `log` gets progress lines and `on_log_line`
    (job id, line) the job's log as it grows, every run of a requeued job in turn.
    """
    layout = RemoteLayout(session.remote_root())
    model, checkpoints = layout.model(salt), layout.checkpoints(salt)
    if session.exists(f"{model}/{MODEL_JSON}"):
        log(f"the cluster already has this model at {model}; fetching it")
        download_model(session, model, dest, expected=None, log=log)
        _drop_checkpoints(session, checkpoints)  # its job may have died before removing them
        return TrainedOnCluster(model, slurm.world_size)
    slurm, env = for_job(session, layout, slurm, log=log)  # the managed env, built or reused
    staged: list[StageResult] = []
    lines: list[str] = []  # the job's log, every run of it: what its restarts cost

    def keep_line(job_id: int, line: str) -> None:
        lines.append(line)
        on_log_line(job_id, line)

    def prepare() -> SlurmJobSpec:
        staged.append(_stage_sample(session, layout, sample_dir, sample_salt, remote_image_root))
        stage = staged[0]
        log(
            f"sample at {stage.remote_dir}: {stage.sent_files} of {stage.files} files sent"
            f" ({stage.sent_bytes / 1e6:.1f} MB, {stage.seconds:.1f}s), all sha256-verified"
            + (f"; repaired {list(stage.repaired)}" if stage.repaired else "")
        )
        code = upload_ml_code(session, layout)
        config_file = f"{layout.job(salt)}/{TRAIN_CONFIG_JSON}"
        transfer.write_bytes(session, json.dumps(training, indent=2).encode(), config_file)
        if session.exists(checkpoints):
            log(f"an earlier job of this salt left {checkpoints}: the new job resumes from it")
        return job_spec(salt, slurm, layout, sample=stage.remote_dir, code=code, config=config_file)

    job, status, followed = run_or_follow(
        session,
        job_dir=layout.job(salt),
        model_dir=model,
        prepare=prepare,
        record={"world_size": slurm.world_size, **(record or {})},
        resubmit_failed=resubmit_failed,
        poll_interval_s=slurm.poll_interval_s,
        timeout_s=slurm.timeout_s,
        on_log_line=keep_line,
        log=log,
        max_restarts=slurm.max_restarts,
    )
    cost = restart_cost(lines, status.restarts)
    if status.restarts:
        log(f"Slurm job {job.job_id} ran {cost.runs_in_log} times: {cost.to_dict()}")
    usage = job_usage(session, job.job_id)
    log(f"Slurm job {job.job_id} used (from {usage['source']}): {usage}")
    download_model(session, model, dest, expected=None, log=log)
    _drop_checkpoints(session, checkpoints)
    stage = staged[0] if staged else None
    return TrainedOnCluster(model, slurm.world_size, job, status, followed, usage, stage, env, cost)


def _drop_checkpoints(session: SSHSession, checkpoints: str) -> None:
    """The model is published: nothing will resume from its checkpoints."""
    session.run(f"rm -rf -- {shlex.quote(checkpoints)}", check=True)


def _stage_sample(
    session: SSHSession,
    layout: RemoteLayout,
    sample_dir: Path,
    sample_salt: str,
    remote_image_root: str | None,
) -> StageResult:
    """The sample at `samples/<salt>`; with `remote_image_root`, its images copied from there."""
    images = [row["file"] for row in read_csv_rows(sample_dir / IMAGES_CSV)]
    return staging.stage_folder(
        session,
        sample_dir,
        layout.sample(sample_salt),
        key=sample_salt,
        remote_root=remote_image_root,
        from_remote_root=images,
    )


def job_spec(
    salt: str, slurm: SlurmSettings, layout: RemoteLayout, *, sample: str, code: str, config: str
) -> SlurmJobSpec:
    """The training job of `salt`: the trainer on `sample` with `config`, the ML code at `code`
    first on `PYTHONPATH`, the model written aside and published by one `mv`."""
    q = shlex.quote
    model, checkpoints = layout.model(salt), layout.checkpoints(salt)
    partial = partial_dir(model)
    train_args = (
        f"--sample {q(sample)} --out {partial} --config {q(config)} --cache-dir {q(layout.cache)}"
        f" --checkpoint-dir {q(checkpoints)}"
    )
    per_node = procs_per_node(slurm.ntasks_per_node, slurm.gpus_per_node)
    python = slurm.python or DEFAULT_PYTHON
    launch_setup, command = launch(python, train_args, nodes=slurm.nodes, per_node=per_node)
    return SlurmJobSpec(
        name=f"oct-train-{salt}",
        command=command,
        finish=[f"mv -T {partial} {q(model)}", f"rm -rf -- {q(checkpoints)}"],
        signal_margin_s=slurm.signal_margin_s,
        max_restarts=slurm.max_restarts,
        srun_step=command.startswith("srun "),
        workdir=layout.job(salt),
        output="slurm-%j.log",
        **slurm.sbatch_options(),
        setup=[
            *slurm.setup,
            f"export PYTHONPATH={q(code)}${{PYTHONPATH:+:$PYTHONPATH}}",
            f"mkdir -p {partial}",
            *launch_setup,
        ],
    )
