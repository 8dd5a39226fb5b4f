"""Dagster resource for a Slurm cluster reached over SSH (commands, verified transfers, jobs).

Settings left unset on the resource are read from `OCT_CLUSTER_*` environment variables when the
resource is first used, not when definitions load: definitions load with nothing set, and a run
that needs the cluster fails at step start with one message naming every missing variable.
Secrets (password, key passphrase) are never fields: the resource only holds the *names* of the
environment variables that carry them, so they cannot reach run config, the UI or logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from oct_assets.cluster.errors import ClusterConfigError
from oct_assets.cluster.types import SSHSettings

if TYPE_CHECKING:  # ssh.py loads paramiko: imported when the first session is created
    from oct_assets.cluster.ssh import SSHSession

ENV_PREFIX = "OCT_CLUSTER_"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class ClusterResource(dg.ConfigurableResource):
    """Settings, a lazily created `SSHSession` and its lifecycle: nothing else.

    Callers use the session directly (`cluster.session.run(...)`), the transfer functions
    (`transfer.download(cluster.session, ...)`) and the Slurm functions (`slurm.submit(session,
    spec)`).

    Every connection field may be left `None`; it is then read from `OCT_CLUSTER_<NAME>` on first
    use (HOST, PORT, USER, KEY_FILE, KNOWN_HOSTS, REMOTE_DIR). Host keys are checked against
    `known_hosts` and unknown or changed keys are refused unless `trust_on_first_use` is set
    (unknown keys only; a changed key is always refused). Relative remote paths live under
    `remote_dir`. Usable directly (`with ClusterResource(...) as c:`) or as a Dagster resource,
    which closes the connection when the step ends.
    """

    host: str | None = Field(default=None, description="Login node; env OCT_CLUSTER_HOST.")
    port: int | None = Field(default=None, description="SSH port; env OCT_CLUSTER_PORT, else 22.")
    username: str | None = Field(default=None, description="Login name; env OCT_CLUSTER_USER.")
    key_file: str | None = Field(
        default=None, description="Private key (ed25519/RSA/ECDSA); env OCT_CLUSTER_KEY_FILE."
    )
    known_hosts: str | None = Field(
        default=None,
        description="known_hosts file; env OCT_CLUSTER_KNOWN_HOSTS, else ~/.ssh/known_hosts.",
    )
    remote_dir: str | None = Field(
        default=None,
        description="Remote working folder (absolute, or relative to the login home);"
        " env OCT_CLUSTER_REMOTE_DIR.",
    )
    password_env_var: str = Field(
        default="OCT_CLUSTER_PASSWORD",
        description="Name of the environment variable holding the password (never the password).",
    )
    key_passphrase_env_var: str = Field(
        default="OCT_CLUSTER_KEY_PASSPHRASE",
        description="Name of the environment variable holding the key's passphrase.",
    )
    trust_on_first_use: bool = Field(
        default=False,
        description="Opt-in: accept and record an unknown host key (logged with its fingerprint)."
        " Leave off unless the first connection is made from a trusted network.",
    )
    allow_agent: bool = Field(default=False, description="Also offer keys from ssh-agent.")
    connect_timeout_s: float = Field(default=15.0, gt=0)
    keepalive_interval_s: int = Field(default=30, ge=0)
    command_timeout_s: float | None = Field(
        default=600.0, gt=0, description="Default timeout of run(); None waits forever."
    )
    retries: int = Field(default=3, ge=0, description="Reconnect attempts on dropped connections.")
    retry_backoff_s: float = Field(default=1.0, ge=0)

    _session: SSHSession | None = PrivateAttr(default=None)

    # -- configuration ---------------------------------------------------------------------

    def _setting(self, field: str, env_name: str, missing: list[str]) -> str | None:
        value: Any = getattr(self, field)
        if isinstance(value, dg.EnvVar):  # direct use outside a run: resolve it ourselves
            env_name = value.env_var_name
            value = os.environ.get(env_name)
        elif type(value).__name__ == "IntEnvVar":  # dg.EnvVar.int(...)
            env_name = value.name
            value = os.environ.get(env_name)
        elif value is None:
            value = os.environ.get(env_name)
        if value in (None, ""):
            missing.append(env_name)
            return None
        return str(value)

    def settings(self) -> SSHSettings:
        """Resolve fields and environment; one `ClusterConfigError` lists every gap at once."""
        missing: list[str] = []
        problems: list[str] = []
        host = self._setting("host", f"{ENV_PREFIX}HOST", missing)
        username = self._setting("username", f"{ENV_PREFIX}USER", missing)
        self._setting("remote_dir", f"{ENV_PREFIX}REMOTE_DIR", missing)
        port_text = self._setting("port", f"{ENV_PREFIX}PORT", []) or "22"
        key_file = self._setting("key_file", f"{ENV_PREFIX}KEY_FILE", [])
        known_hosts = self._setting("known_hosts", f"{ENV_PREFIX}KNOWN_HOSTS", [])
        password = os.environ.get(self.password_env_var) or None
        passphrase = os.environ.get(self.key_passphrase_env_var) or None
        if key_file is None and password is None and not self.allow_agent:
            missing.append(f"{ENV_PREFIX}KEY_FILE or {self.password_env_var}")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            problems.append(f"port {port_text!r} is not a TCP port")
        key_path = Path(key_file).expanduser() if key_file else None
        if key_path is not None and not key_path.is_file():
            problems.append(f"key file {key_path} does not exist")
        if missing or problems:
            parts = []
            if missing:
                parts.append("set " + ", ".join(missing))
            parts.extend(problems)
            raise ClusterConfigError("cluster resource is not configured: " + "; ".join(parts))
        assert host is not None and username is not None
        return SSHSettings(
            host=host,
            port=int(port_text),
            username=username,
            key_file=key_path,
            known_hosts=Path(known_hosts or DEFAULT_KNOWN_HOSTS).expanduser(),
            password=password,
            key_passphrase=passphrase,
            passphrase_source=self.key_passphrase_env_var,
            trust_on_first_use=self.trust_on_first_use,
            allow_agent=self.allow_agent,
            connect_timeout_s=self.connect_timeout_s,
            keepalive_interval_s=self.keepalive_interval_s,
            retries=self.retries,
            retry_backoff_s=self.retry_backoff_s,
            command_timeout_s=self.command_timeout_s,
        )

    @property
    def session(self) -> SSHSession:
        """The underlying SSH session, created on first use (no network until an operation)."""
        if self._session is None:
            from oct_assets.cluster.ssh import SSHSession

            settings = self.settings()
            remote_dir = self._setting("remote_dir", f"{ENV_PREFIX}REMOTE_DIR", [])
            self._session = SSHSession(settings, remote_dir or ".")
        return self._session

    # -- lifecycle --------------------------------------------------------------------------

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # In a run, fail at step start, before any work, when the environment is incomplete.
        # Sensors (no run) build the resource every tick; they report the gap as a skip reason.
        if context.run is not None:
            self.settings()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def __enter__(self) -> ClusterResource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def cluster_resource_from_env() -> ClusterResource:
    """The resource the definitions bind: every setting comes from `OCT_CLUSTER_*` at first use.

    Reads nothing now, so definitions load without the variables; using the resource (or starting
    a step that requires it) without them raises one `ClusterConfigError` naming all of them.
    """
    return ClusterResource()
