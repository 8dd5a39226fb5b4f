"""Slurm jobs that survive restarts of whoever submitted them, no Dagster.

A job's id is recorded beside its folder at submission (`jobs/<salt>/job.json`, written by the
same remote command that runs sbatch). A later call for the same salt follows a job that is still
pending or running instead of submitting a second one; a failed job is reported (state and log
tail) and resubmitted only when asked; a job cancelled by its own caller (interrupt, timeout)
has its record moved aside, so the next call submits afresh. Each job writes into its own
`<model>.partial-<job id>` folder, so no job ever deletes a folder another live job writes.
A requeued job keeps its id and its record: it is followed through every restart.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from datetime import UTC, datetime

from oct_assets.cluster import slurm
from oct_assets.cluster.batch_script import SlurmJobSpec
from oct_assets.cluster.errors import ClusterError, SlurmJobFailedError, SlurmJobNotFoundError
from oct_assets.cluster.slurm import RemoteShell
from oct_assets.cluster.types import SlurmJob, SlurmJobStatus

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial-"


def partial_dir(model_dir: str) -> str:
    """The job's own unfinished model folder as quoted shell text (`$SLURM_JOB_ID` expands)."""
    return f"{shlex.quote(model_dir)}{PARTIAL_SUFFIX}$SLURM_JOB_ID"


def sweep_dead_partials(shell: RemoteShell, model_dir: str) -> None:
    """Delete `<model>.partial-<id>` folders whose job Slurm no longer runs (never a live one)."""
    pattern = shlex.quote(model_dir + PARTIAL_SUFFIX) + "*"
    shell.run(
        f'for d in {pattern}; do [ -d "$d" ] || continue; id=${{d##*{PARTIAL_SUFFIX}}};'
        ' [ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ] || rm -rf -- "$d"; done',
        check=True,
    )


def run_or_follow(
    shell: RemoteShell,
    *,
    job_dir: str,
    model_dir: str,
    prepare: Callable[[], SlurmJobSpec],
    record: dict,
    resubmit_failed: bool,
    poll_interval_s: float,
    timeout_s: float | None,
    on_log_line: Callable[[int, str], None],
    log: Callable[[str], None],
    max_restarts: int | None = None,
) -> tuple[SlurmJob, SlurmJobStatus, bool]:
    """Follow the job recorded in `job_dir`, or submit `prepare()`'s; (job, status, followed).

    Called when `model_dir` holds no finished model; `on_log_line(job_id, line)` gets the job's
    log as it grows. Raises `SlurmJobFailedError` for a recorded
    job that ended without one unless `resubmit_failed` is set, and `SlurmRestartLimitError`
    (cancelling it) for a job started again more than `max_restarts` times.
    """

    def follow(job: SlurmJob) -> SlurmJobStatus:
        return _follow(
            shell, job, job_dir, poll_interval_s, timeout_s, on_log_line, log, max_restarts
        )

    found = slurm.read_record(shell, job_dir)
    if found is not None:
        job, previous = found
        try:
            status = slurm.job_status(shell, job.job_id)
        except SlurmJobNotFoundError:
            status = SlurmJobStatus(job.job_id, "UNKNOWN", reason="no longer known to Slurm")
        if not status.finished and status.state != "UNKNOWN":
            log(
                f"following Slurm job {job.job_id} ({status.state}) submitted"
                f" {previous.get('submitted', '?')} for this salt, instead of submitting again"
            )
            return job, follow(job), True
        if not resubmit_failed:
            raise SlurmJobFailedError(
                job,
                status,
                slurm.tail(shell, job.log_path),
                hint="it was submitted by an earlier run for this salt; set"
                " `resubmit_failed: true` to submit it again",
            )
        log(f"Slurm job {job.job_id} ended {status.state} without a model; resubmitting")
        slurm.retire_record(shell, job_dir, job.job_id, "failed")
    sweep_dead_partials(shell, model_dir)
    spec = prepare()
    submitted = {"submitted": datetime.now(UTC).isoformat(timespec="seconds"), **record}
    job = slurm.submit(shell, spec, record=submitted)
    log(f"submitted Slurm job {job.job_id}; log {job.log_path}")
    return job, follow(job), False


def _follow(
    shell: RemoteShell,
    job: SlurmJob,
    job_dir: str,
    poll_interval_s: float,
    timeout_s: float | None,
    on_log_line: Callable[[int, str], None],
    log: Callable[[str], None],
    max_restarts: int | None,
) -> SlurmJobStatus:
    """Wait for the job through its restarts; if waiting stops early the job is cancelled and
    its record retired (a failed job's record stays, to be reported)."""

    def restarted(status: SlurmJobStatus) -> None:
        log(
            f"Slurm job {job.job_id} was started again (restart {status.restarts}, now"
            f" {status.state}); following it on under the same id"
        )

    try:
        return slurm.wait(
            shell,
            job,
            poll_interval_s=poll_interval_s,
            timeout_s=timeout_s,
            on_log_line=lambda line: on_log_line(job.job_id, line),
            cancel_on_abort=True,
            max_restarts=max_restarts,
            on_restart=restarted,
        )
    except SlurmJobFailedError:
        raise  # the record stays: the next run reports it and resubmits only when asked
    except BaseException:
        try:  # slurm.wait cancelled the job; the next run must submit afresh, not report it
            slurm.retire_record(shell, job_dir, job.job_id, "cancelled")
        except ClusterError as exc:
            logger.error("could not retire the record of cancelled job %d: %s", job.job_id, exc)
        raise
