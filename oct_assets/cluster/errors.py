"""Exceptions of the cluster resource, free of paramiko so that callers import them cheaply.

Every error is a `ClusterError`. Messages name the host, path or setting involved and never a
secret (password, passphrase).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oct_assets.cluster.types import CommandResult, SlurmJob, SlurmJobStatus


class ClusterError(Exception):
    """Base class of every error raised by the cluster resource."""


class ClusterConfigError(ClusterError):
    """Settings are missing or invalid; raised before any connection is attempted."""


class ClusterConnectionError(ClusterError):
    """The host could not be reached, or the connection dropped and retries ran out."""


class ClusterAuthError(ClusterError):
    """The server refused our credentials (never retried; the message holds no secret)."""


class ClusterHostKeyError(ClusterError):
    """The server's host key is unknown or changed (never retried, never silently accepted)."""


class RemoteFileNotFoundError(ClusterError, FileNotFoundError):
    """A remote path that an operation needs does not exist."""


class ClusterCommandError(ClusterError):
    """A remote command exited non-zero where success was required."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


class ClusterCommandTimeout(ClusterError):
    """A remote command ran past its timeout; its channel was closed."""


class TransferVerificationError(ClusterError):
    """The sha256 of the transferred bytes differs from the sha256 of the source."""


class SlurmError(ClusterError):
    """A Slurm command failed."""


class SlurmSubmitError(SlurmError):
    """`sbatch` refused the job."""


class SlurmJobNotFoundError(SlurmError):
    """Neither squeue nor scontrol knows the job (it left slurmctld's memory after MinJobAge)."""


class SlurmWaitTimeoutError(SlurmError):
    """The job did not finish within the wait's timeout."""


class SlurmJobUnschedulableError(SlurmError):
    """The job is pending for a reason that waiting cannot cure (it asks for more than exists)."""


class SlurmJobFailedError(SlurmError):
    """The job ended in a state other than COMPLETED with exit code 0."""

    def __init__(
        self, job: SlurmJob, status: SlurmJobStatus, log_tail: str, hint: str = ""
    ) -> None:
        exit_text = "unknown" if status.exit_code is None else str(status.exit_code)
        if status.signal:
            exit_text += f" (signal {status.signal})"
        super().__init__(
            f"Slurm job {job.job_id} ({job.name}) ended {status.state}, exit code {exit_text},"
            f" reason {status.reason or 'None'}{'; ' + hint if hint else ''};"
            f" last lines of {job.log_path}:\n{log_tail}"
        )
        self.job = job
        self.status = status
        self.log_tail = log_tail


class SlurmRestartLimitError(SlurmJobFailedError):
    """The job was started again more often than `slurm.max_restarts` allows; it is cancelled."""
