"""Settings and results of the cluster resource, free of paramiko so that callers (definitions,
assets, sensors) import them without loading the SSH stack."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in total) as a transfer proceeds."""


@dataclass(frozen=True)
class SSHSettings:
    """Resolved connection settings. Secrets are excluded from repr so they never reach logs."""

    host: str
    username: str
    port: int = 22
    key_file: Path | None = None
    known_hosts: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts").expanduser())
    password: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)
    passphrase_source: str = "OCT_CLUSTER_KEY_PASSPHRASE"
    trust_on_first_use: bool = False
    allow_agent: bool = False
    connect_timeout_s: float = 15.0
    keepalive_interval_s: int = 30
    retries: int = 3
    retry_backoff_s: float = 1.0
    command_timeout_s: float | None = 600.0

    @property
    def target(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def auth_method(self) -> str:
        methods = []
        if self.key_file is not None:
            methods.append(f"public key {self.key_file}")
        if self.password is not None:
            methods.append("password")
        if self.allow_agent:
            methods.append("ssh-agent")
        return " then ".join(methods) or "none"


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one remote command; `exit_code` is -1 when the command died from a signal."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class RemoteStat:
    path: str
    size: int
    mtime: float
    mode: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class RemoteFileDigest:
    """Size, modification time (whole seconds) and sha256 of one remote file."""

    path: str
    size: int
    mtime: float
    sha256: str


@dataclass(frozen=True)
class TransferResult:
    source: str
    destination: str
    size: int
    sha256: str
    seconds: float


@dataclass(frozen=True)
class DirUploadResult:
    """Relative POSIX paths of the files sent and of those skipped because their sha256 matched."""

    remote_dir: str
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]


# Slurm job states after which a job never runs again.
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
# States a requeueable job passes through on its way back to PENDING (PreemptMode=REQUEUE, a
# lost node): final only once they last (`slurm.REQUEUE_GRACE_S`), never at first sight.
MAYBE_REQUEUED_STATES = frozenset({"PREEMPTED", "NODE_FAIL"})


@dataclass(frozen=True)
class SlurmJob:
    """A submitted job: its id and where its script and log live."""

    job_id: int
    name: str
    log_path: str
    script_path: str


@dataclass(frozen=True)
class SlurmJobStatus:
    job_id: int
    state: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    restarts: int = 0  # times Slurm started the job again (requeue, preemption, node failure)

    @property
    def finished(self) -> bool:
        """Whether the job can never run again (a PREEMPTED one may yet be requeued)."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0
