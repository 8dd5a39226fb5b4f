"""A private sshd on 127.0.0.1 with its keys, known_hosts and a throwaway user, and the
fixtures that start it once per session (`sshd_server`) and log in to it (`cluster`).

Everything lives in one private temp folder; nothing under /etc is written. `SLURM_CONF`
reaches SSH sessions through sshd's `SetEnv`, so jobs submitted over SSH find the test Slurm
(`slurm.py`). sshd runs in the foreground as our child and is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oct_assets.resources.cluster import ENV_PREFIX, ClusterResource
from oct_assets_tests.services.daemons import (
    ServiceStartError,
    descendants,
    die_with_parent,
    free_port,
    missing,
    stop_process,
    unavailable,
    wait_for,
)

SSHD = "/usr/sbin/sshd"
SSH_TOOLS = ("ssh-keygen", "useradd", "userdel", "chpasswd")
TEST_USER_PREFIX = "octt-"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run sshd (empty when everything is there)."""
    return missing((SSHD,), SSH_TOOLS)


def _keygen(path: Path, kind: str, passphrase: str = "") -> Path:
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *bits, "-N", passphrase, "-C", path.name, "-f", path],
        check=True,
        capture_output=True,
    )
    return path


@dataclass
class SshServer:
    """A running private sshd on 127.0.0.1 with its keys, known_hosts and throwaway user.

    The user (random name and password, clean home) logs in with any of the three keys, or with
    the password; root may not log in, so root's shell start-up files never run in tests.
    """

    root: Path
    port: int
    process: subprocess.Popen
    host_key: Path
    known_hosts: Path
    keys: dict[str, Path]
    passphrase: str = field(repr=False)
    user: str
    password: str = field(repr=False)
    log: Path
    remote_dir: Path

    @property
    def known_hosts_line(self) -> str:
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}"

    def resource(self, **overrides) -> ClusterResource:
        """A resource for the test user with the ed25519 key and a fast retry backoff."""
        settings = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": self.user,
            "key_file": str(self.keys["ed25519"]),
            "known_hosts": str(self.known_hosts),
            "remote_dir": str(self.remote_dir),
            "retry_backoff_s": 0.1,
            "connect_timeout_s": 10.0,
        }
        settings.update(overrides)
        return ClusterResource(**settings)

    def session_pids(self) -> list[int]:
        return descendants(self.process.pid)

    def kill_sessions(self) -> int:
        """Kill every process serving a connection (not the listener): a hard drop."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        self.kill_sessions()
        stop_process(self.process)
        _delete_user(self.user)


def _delete_user(user: str) -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(user)
        subprocess.run(["userdel", "-f", user], capture_output=True, check=False)


def _remove_stale_test_users() -> None:
    """Drop test users of crashed runs (their home folder is gone)."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(TEST_USER_PREFIX) and not Path(entry.pw_dir).exists():
            _delete_user(entry.pw_name)


def _create_test_user(home: Path) -> tuple[str, str]:
    _remove_stale_test_users()
    user = TEST_USER_PREFIX + secrets.token_hex(4)
    password = secrets.token_urlsafe(18)
    subprocess.run(
        ["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/bash", user],
        check=True,
        capture_output=True,
    )
    # chpasswd reads the secret from stdin: it never appears on a command line.
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
    return user, password


def start_sshd(root: Path, *, slurm_conf: Path | None = None) -> SshServer:
    """Start sshd on a free loopback port; keys: ed25519, rsa and a passphrase ed25519 key.

    Only the throwaway test user may log in: with a key, or with its password through a
    `Match User` block (PAM and keyboard-interactive off, so sshd checks /etc/shadow itself).
    """
    root.mkdir(parents=True, exist_ok=True)
    for folder in (root.parent, root):
        folder.chmod(0o711)  # the user must reach its home and authorized_keys below root
    host_key = _keygen(root / "host_ed25519", "ed25519")
    passphrase = secrets.token_urlsafe(12)
    keys = {
        "ed25519": _keygen(root / "user_ed25519", "ed25519"),
        "rsa": _keygen(root / "user_rsa", "rsa"),
        "ed25519_passphrase": _keygen(root / "user_ed25519_pp", "ed25519", passphrase),
    }
    authorized = root / "authorized_keys"
    authorized.write_text("".join(k.with_suffix(".pub").read_text() for k in keys.values()))
    authorized.chmod(0o644)  # sshd reads it with the user's privileges
    user, password = _create_test_user(root / "home")
    port = free_port()
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "UsePAM no",
        "MaxStartups 50",
        "MaxSessions 50",
        "Subsystem sftp internal-sftp",
    ]
    if slurm_conf is not None:
        lines.append(f"SetEnv SLURM_CONF={slurm_conf}")
    lines += [f"Match User {user}", "    PasswordAuthentication yes"]
    config = root / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    proc = subprocess.Popen(
        [SSHD, "-D", "-f", config, "-E", log],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for("sshd", listening, 10, log, proc)
    except ServiceStartError:
        stop_process(proc)
        _delete_user(user)
        raise
    server = SshServer(
        root=root,
        port=port,
        process=proc,
        host_key=host_key,
        known_hosts=root / "known_hosts",
        keys=keys,
        passphrase=passphrase,
        user=user,
        password=password,
        log=log,
        remote_dir=root / "home" / "remote",
    )
    server.known_hosts.write_text(server.known_hosts_line + "\n")
    server.remote_dir.mkdir(exist_ok=True)
    shutil.chown(server.remote_dir, user, user)
    return server


@pytest.fixture(scope="session")
def cluster_root() -> Iterator[Path]:
    """Short private folder (unix socket paths must stay under 108 characters)."""
    root = Path(tempfile.mkdtemp(prefix="oct-cluster-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd_server(cluster_root: Path) -> Iterator[SshServer]:
    lacking = missing_prerequisites()
    if lacking:
        unavailable("sshd tests need: " + ", ".join(lacking))
    try:
        server = start_sshd(cluster_root / "sshd", slurm_conf=cluster_root / "slurm" / "slurm.conf")
    except (ServiceStartError, subprocess.CalledProcessError, OSError) as exc:
        unavailable(f"could not start sshd: {exc}")
    yield server
    server.stop()


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Clear every OCT_CLUSTER_* variable so that a test sees only what it sets."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def cluster(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> Iterator[ClusterResource]:
    """A resource logged in as the test user with the ed25519 key; closed after the test."""
    with sshd_server.resource() as resource:
        yield resource
