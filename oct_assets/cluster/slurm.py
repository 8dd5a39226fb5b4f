"""Slurm over SSH: render a batch script, submit it, follow its state and log, cancel it.

Free of anything asset-specific and of paramiko: every function takes a `RemoteShell` (an
`SSHSession`, handed over directly). Accounting (`sacct`) is not assumed; a job is followed with
`squeue`, and with `scontrol show job` once it has left the queue. A requeued job keeps its id:
it is followed through every restart (REQUEUED, PENDING again, PREEMPTED on its way back) with
its log read on from where it was, and given up only past `max_restarts`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import posixpath
import re
import shlex
import time
from collections.abc import Callable
from typing import Protocol

from oct_assets.cluster.batch_script import SlurmJobSpec, render_batch_script
from oct_assets.cluster.errors import (
    ClusterError,
    RemoteFileNotFoundError,
    SlurmError,
    SlurmJobFailedError,
    SlurmJobNotFoundError,
    SlurmJobUnschedulableError,
    SlurmRestartLimitError,
    SlurmSubmitError,
    SlurmWaitTimeoutError,
)
from oct_assets.cluster.types import (
    MAYBE_REQUEUED_STATES,
    TERMINAL_STATES,
    CommandResult,
    SlurmJob,
    SlurmJobStatus,
)

logger = logging.getLogger(__name__)

# Pending reasons no amount of waiting cures: the job asks for more than the partition, its
# nodes, the account or the QoS can ever give. A job pending for one of these fails at once.
FATAL_PENDING_REASONS = frozenset(
    {
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "ReqNodeNotAvail",
        "QOSMaxCpuPerJobLimit",
        "QOSMaxGRESPerJob",
        "QOSMaxNodePerJobLimit",
        "QOSMaxWallDurationPerJobLimit",
        "AssocMaxCpuPerJobLimit",
        "AssocMaxNodesPerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
    }
)
JOB_RECORD = "job.json"
# How long a job may stay PREEMPTED or NODE_FAIL before that counts as its end: Slurm requeues
# a requeueable job within a moment, so only a job it does not requeue stays there.
REQUEUE_GRACE_S = 30.0


class RemoteShell(Protocol):
    """What the Slurm helpers need from an SSH session."""

    def run(
        self, command: str, *, timeout: float | None = None, check: bool = False, retry: bool = True
    ) -> CommandResult: ...

    def resolve(self, path: str) -> str: ...

    def read_tail(self, path: str, max_bytes: int = 8192) -> str: ...

    def read_from(self, path: str, offset: int, max_bytes: int = ...) -> tuple[bytes, int]: ...


def write_script(shell: RemoteShell, spec: SlurmJobSpec) -> str:
    """Write the batch script atomically beside the job's outputs with one command; its path."""
    script = spec.script_path
    encoded = base64.b64encode(render_batch_script(spec).encode()).decode()
    q = shlex.quote
    tmp = f"{q(script)}.tmp-$$"  # $$: the remote shell's pid, unique per writer
    shell.run(
        f"mkdir -p -- {q(spec.workdir)} {q(posixpath.dirname(spec.output_path))} &&"
        f" echo {encoded} | base64 -d > {tmp} && mv -f -- {tmp} {q(script)}",
        check=True,
    )
    return script


def submit(shell: RemoteShell, spec: SlurmJobSpec, record: dict | None = None) -> SlurmJob:
    """Write the script next to the job's outputs and `sbatch` it (never retried: no duplicates).

    A relative `workdir` is resolved under the session's remote folder. With `record`, the same
    remote command that runs sbatch also writes `<workdir>/job.json` (the job id, its name, log
    and script, plus `record`'s fields), so a submitted job is never left without its record.
    """
    spec = dataclasses.replace(spec, workdir=shell.resolve(spec.workdir))
    script = write_script(shell, spec)
    q = shlex.quote
    command = f"sbatch --parsable {q(script)}"
    if record is not None:
        fields = {"name": spec.name, "output": spec.output_path, "script": script, **record}
        rest = json.dumps(fields)[1:]  # '"name": ...}' after the job id
        path = posixpath.join(spec.workdir, JOB_RECORD)
        command = (
            f"id=$({command}) && id=${{id%%;*}} &&"
            f" printf '%s\\n' '{{\"job_id\": '\"$id\"', '{q(rest)} > {q(path)}.tmp-$$ &&"
            f' mv -f -- {q(path)}.tmp-$$ {q(path)} && echo "$id"'
        )
    result = shell.run(command, retry=False)
    job_id_text = result.stdout.strip().split(";")[0]
    if not result.ok or not job_id_text.isdigit():
        raise SlurmSubmitError(
            f"sbatch {script} failed (exit {result.exit_code}): {result.stderr.strip()}"
        )
    job = _job(int(job_id_text), spec.name, spec.output_path, script)
    logger.info("submitted Slurm job %d (%s)", job.job_id, spec.name)
    return job


def _job(job_id: int, name: str, output: str, script: str) -> SlurmJob:
    return SlurmJob(job_id, name, output.replace("%j", str(job_id)).replace("%x", name), script)


def read_record(shell: RemoteShell, workdir: str) -> tuple[SlurmJob, dict] | None:
    """The job recorded in `<workdir>/job.json` by `submit`, with the record; None if none."""
    path = shell.resolve(posixpath.join(workdir, JOB_RECORD))
    result = shell.run(f"cat -- {shlex.quote(path)}")
    if not result.ok:
        if "No such file" in result.stderr:
            return None
        raise SlurmError(f"cannot read job record {path}: {result.stderr.strip()}")
    record = json.loads(result.stdout)
    job = _job(int(record["job_id"]), record["name"], record["output"], record["script"])
    return job, record


def retire_record(shell: RemoteShell, workdir: str, job_id: int, why: str) -> None:
    """Move `job.json` aside as `job-<id>.<why>.json`, so that the next run submits afresh."""
    folder = shell.resolve(workdir)
    q = shlex.quote
    shell.run(
        f"cd -- {q(folder)} && mv -f -- {JOB_RECORD} {q(f'job-{int(job_id)}.{why}.json')}",
        check=True,
    )


def _parse_scontrol(job_id: int, text: str) -> SlurmJobStatus:
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    if "JobState" not in fields:
        raise SlurmError(f"cannot read JobState of job {job_id} from scontrol: {text[:500]!r}")
    exit_code = signal = None
    if match := re.fullmatch(r"(\d+):(\d+)", fields.get("ExitCode", "")):
        exit_code, signal = int(match.group(1)), int(match.group(2))
    restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else 0
    return SlurmJobStatus(
        job_id, fields["JobState"], exit_code, signal, fields.get("Reason"), restarts
    )


def _parse_squeue(job_id: int, text: str) -> SlurmJobStatus | None:
    """`squeue -O State:|,Reason:|,RestartCnt` of one job; None when it is not in the queue."""
    state, _, rest = text.strip().partition("|")
    reason, _, restarts = rest.partition("|")
    if not state:
        return None
    count = int(restarts.strip()) if restarts.strip().isdigit() else 0
    return SlurmJobStatus(job_id, state, reason=reason.strip() or None, restarts=count)


def job_status(shell: RemoteShell, job_id: int) -> SlurmJobStatus:
    """State and restarts from `squeue`; exit code and reason from `scontrol` once the job is
    done or gone."""
    queued = shell.run(f"squeue -h -j {int(job_id)} -O 'State:|,Reason:|,RestartCnt'")
    status = _parse_squeue(job_id, queued.stdout) if queued.ok else None
    if status is not None and status.state not in TERMINAL_STATES:
        return status
    shown = shell.run(f"scontrol show job -o {int(job_id)}")
    if not shown.ok:
        if "Invalid job id" in shown.stderr:
            raise SlurmJobNotFoundError(
                f"Slurm job {job_id} is not known to squeue or scontrol (finished longer ago than"
                " MinJobAge, and accounting is not used); read its log for the outcome"
            )
        raise SlurmError(f"scontrol show job {job_id} failed: {shown.stderr.strip()}")
    return _parse_scontrol(job_id, shown.stdout)


def cancel(shell: RemoteShell, job_id: int) -> None:
    result = shell.run(f"scancel {int(job_id)}")
    if not result.ok:
        raise SlurmError(f"scancel {job_id} failed: {result.stderr.strip()}")
    logger.info("cancelled Slurm job %d", job_id)


def cancel_for_good(shell: RemoteShell, job_id: int, timeout_s: float = 120.0) -> SlurmJobStatus:
    """Cancel until the job has ended, and return its final status.

    A job being requeued is COMPLETING while its old run is killed, and scancel does not stop
    it from becoming PENDING again afterwards: so scancel is repeated until Slurm says the job
    is over (or `timeout_s` passes, raising `SlurmError`).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        shell.run(f"scancel {int(job_id)}")  # refused while completing: asked again below
        status = job_status(shell, job_id)
        if status.finished:
            logger.info("cancelled Slurm job %d", job_id)
            return status
        if time.monotonic() > deadline:
            raise SlurmError(f"Slurm job {job_id} still {status.state} {timeout_s}s after scancel")
        time.sleep(1.0)


def tail(shell: RemoteShell, path: str, max_bytes: int = 4000) -> str:
    try:
        return shell.read_tail(path, max_bytes)
    except RemoteFileNotFoundError:
        return f"(no log: {path} does not exist)"


class _LineFollower:
    """Feeds new complete lines of a growing remote log to a callback."""

    def __init__(self, shell: RemoteShell, path: str, on_line: Callable[[str], None]) -> None:
        self._shell, self._path, self._on_line = shell, path, on_line
        self._offset = 0
        self._partial = b""

    def poll(self, final: bool = False) -> None:
        while True:
            data, offset = self._shell.read_from(self._path, self._offset)
            if offset < self._offset:  # truncated: start over
                self._partial = b""
            self._offset = offset
            if not data:
                break
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                self._on_line(line.decode(errors="replace"))
        if final and self._partial:
            self._on_line(self._partial.decode(errors="replace"))
            self._partial = b""


def wait(
    shell: RemoteShell,
    job: SlurmJob,
    *,
    poll_interval_s: float = 5.0,
    timeout_s: float | None = None,
    on_log_line: Callable[[str], None] | None = None,
    cancel_on_abort: bool = True,
    max_restarts: int | None = None,
    on_restart: Callable[[SlurmJobStatus], None] | None = None,
) -> SlurmJobStatus:
    """Poll until the job ends; raise `SlurmJobFailedError` (state + log tail) unless it succeeded.

    A requeued job is the same job: waiting goes on through its restarts (`on_restart` hears of
    each), reading its log (opened for append) on from where it was. Started again more than
    `max_restarts` times, it is cancelled (`SlurmRestartLimitError`); one that fails having used
    them all fails with that error too. If waiting stops early (timeout, interrupt, lost
    connection) and `cancel_on_abort` is set, the job is cancelled so that it does not keep
    running unobserved.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    follower = _LineFollower(shell, job.log_path, on_log_line) if on_log_line else None
    restarts, maybe_requeued_since, cancelled = 0, None, False
    try:
        while True:
            status = job_status(shell, job.job_id)
            if follower:
                follower.poll()
            if status.restarts > restarts:
                restarts = status.restarts
                if on_restart is not None:
                    on_restart(status)
            if max_restarts is not None and status.restarts > max_restarts:
                final, cancelled = cancel_for_good(shell, job.job_id), True
                final = dataclasses.replace(final, restarts=max(final.restarts, status.restarts))
                raise _restart_limit(shell, job, final, max_restarts, "; cancelled it")
            if status.finished:
                break
            if status.state in MAYBE_REQUEUED_STATES:
                maybe_requeued_since = maybe_requeued_since or time.monotonic()
                if time.monotonic() - maybe_requeued_since >= REQUEUE_GRACE_S:
                    break  # not requeued: this is its end
            else:
                maybe_requeued_since = None
            reason = (status.reason or "").split(",")[0]
            if status.state == "PENDING" and reason in FATAL_PENDING_REASONS:
                raise SlurmJobUnschedulableError(
                    f"Slurm job {job.job_id} ({job.name}) can never start: it is pending with"
                    f" Reason={status.reason} (it asks for more nodes, CPUs, GPUs, memory or"
                    " time than the partition, account or QoS allows); cancelled it"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise SlurmWaitTimeoutError(
                    f"Slurm job {job.job_id} ({job.name}) still {status.state} after {timeout_s}s;"
                    f" last lines of {job.log_path}:\n{tail(shell, job.log_path)}"
                )
            time.sleep(poll_interval_s)
    except BaseException:
        if cancel_on_abort and not cancelled:
            try:
                cancel(shell, job.job_id)
            except ClusterError as exc:
                logger.error("could not cancel Slurm job %d: %s", job.job_id, exc)
        raise
    if follower:
        follower.poll(final=True)
    if not status.succeeded:
        if max_restarts and status.restarts >= max_restarts:
            raise _restart_limit(shell, job, status, max_restarts, ", so it was not requeued again")
        raise SlurmJobFailedError(job, status, tail(shell, job.log_path))
    return status


def _restart_limit(
    shell: RemoteShell, job: SlurmJob, status: SlurmJobStatus, limit: int, then: str
) -> SlurmRestartLimitError:
    hint = (
        f"it was started again {status.restarts} times and slurm.max_restarts={limit}{then}"
        " (a job that fails after every resume; raise slurm.max_restarts if each restart"
        " makes progress)"
    )
    return SlurmRestartLimitError(job, status, tail(shell, job.log_path), hint=hint)
