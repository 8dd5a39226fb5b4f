"""Fixtures that start a real sshd and a single-node Slurm on loopback.

The start/stop logic is plain functions (`start_sshd`, `start_slurm`) so that the transfer
benchmark can reuse it; the pytest fixtures are thin session-scoped wrappers. Everything lives
in one private temp folder: sshd_config, host/user keys, munge key and socket, slurm.conf,
state and logs. Nothing under /etc is written; `SLURM_CONF` reaches SSH sessions through
sshd's `SetEnv`. Daemons run in the foreground as our children and are stopped at teardown.

`start_slurm(..., accounting=True)` also starts a private MariaDB (own datadir and socket, TCP on
a free loopback port) and a private slurmdbd, so that `sacct` answers from real job records
(`accounting_cluster` fixture); the shared `slurm_cluster` keeps no accounting, like many small
clusters, so the `scontrol` fallback is exercised for real too.

Missing binaries or a non-root user skip the tests, unless `OCT_REQUIRE_CLUSTER_TESTS=1`, which
turns every unavailable service or failed start into a test failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oct_assets.resources.cluster import ENV_PREFIX, ClusterResource

REQUIRE_ENV = "OCT_REQUIRE_CLUSTER_TESTS"
SSHD = "/usr/sbin/sshd"
MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
SLURMDBD = "/usr/sbin/slurmdbd"
MARIADBD = "/usr/sbin/mariadbd"
SSH_TOOLS = ("ssh-keygen", "useradd", "userdel", "chpasswd")
SLURM_TOOLS = ("mungekey", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
ACCOUNTING_TOOLS = ("mariadb-install-db", "mariadb", "sacct", "sacctmgr")
CLUSTER_NAME = "octtest"
TEST_USER_PREFIX = "octt-"


class ServiceStartError(RuntimeError):
    """A test service did not come up; the message carries its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_prerequisites(*, slurm: bool, accounting: bool = False) -> list[str]:
    """What this machine lacks to run the services (empty when everything is there)."""
    missing = [b for b in (SSHD,) if not os.access(b, os.X_OK)]
    missing += [t for t in SSH_TOOLS if shutil.which(t) is None]
    if slurm:
        missing += [b for b in (MUNGED, SLURMCTLD, SLURMD) if not os.access(b, os.X_OK)]
        missing += [t for t in SLURM_TOOLS if shutil.which(t) is None]
    if accounting:
        missing += [b for b in (SLURMDBD, MARIADBD) if not os.access(b, os.X_OK)]
        missing += [t for t in ACCOUNTING_TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root (sshd and slurmd must run as root)")
    return missing


def _wait_for(what: str, ready, timeout_s: float, log: Path, proc: subprocess.Popen | None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceStartError(f"{what} exited with {proc.returncode}: {_read(log)}")
        if ready():
            return
        time.sleep(0.1)
    raise ServiceStartError(f"{what} not ready after {timeout_s}s: {_read(log)}")


def _read(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except FileNotFoundError:
        return f"({path} missing)"


def _stop(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if pytest dies, so no daemon outlives a run."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (found through /proc, so no psutil is needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


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
        _stop(self.process)
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
        preexec_fn=_die_with_parent,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        _wait_for("sshd", listening, 10, log, proc)
    except ServiceStartError:
        _stop(proc)
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


@dataclass
class SlurmCluster:
    """A private munge + slurmctld + slurmd; `conf` is what SLURM_CONF points to."""

    root: Path
    conf: Path
    processes: list[subprocess.Popen]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def command(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        jobs = self.command("squeue", "-h", "-o", "%i").stdout.split()
        if jobs:
            self.command("scancel", *jobs)
        self.command("scontrol", "shutdown")
        for proc in reversed(self.processes):
            _stop(proc)


def _checked(what: str, args: list, **kwargs) -> None:
    """Run a set-up command; a failure is a ServiceStartError carrying its output."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise ServiceStartError(f"{what} timed out after {exc.timeout}s") from exc
    if done.returncode != 0:
        raise ServiceStartError(f"{what} exited with {done.returncode}: {done.stderr[-2000:]}")


# A throwaway database: durability (fsync, doublewrite) costs start-up time and buys nothing.
_THROWAWAY_DB = (
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-flush-method=nosync",
    "--innodb-buffer-pool-size=64M",
)


def _start_mariadb(db_dir: Path, spawn, *, password: str) -> int:
    """A private MariaDB for slurmdbd: own datadir and socket, TCP on a free loopback port.

    Returns the port. The `slurm` SQL user (password from stdin, never on a command line) may
    connect over TCP from 127.0.0.1 only; root logs in through the private socket.
    """
    db_dir.mkdir(parents=True, exist_ok=True)
    data, sock, log = db_dir / "data", db_dir / "mariadb.sock", db_dir / "mariadb.log"
    _checked(
        "mariadb-install-db",
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--skip-test-db",
            "--skip-name-resolve",
            "--auth-root-authentication-method=socket",
            *_THROWAWAY_DB,
        ],
        timeout=120,
    )
    port = free_port()
    server = spawn(
        [
            MARIADBD,
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={sock}",
            f"--pid-file={db_dir / 'mariadb.pid'}",
            f"--log-error={log}",
            f"--tmpdir={db_dir}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            "--user=root",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-lock-wait-timeout=900",  # slurmdbd's recommendation
            *_THROWAWAY_DB,
        ],
        db_dir / "mariadb.out",
    )

    def accepts() -> bool:
        return (
            subprocess.run(
                ["mariadb-admin", "--no-defaults", f"--socket={sock}", "-u", "root", "ping"],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )

    _wait_for("mariadb", accepts, 30, log, server)
    grant = (
        f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';\n"
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\n"
    )
    _checked(
        "mariadb (create the slurm user)",
        ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"],
        input=grant,
        timeout=30,
    )
    return port


def start_slurm(root: Path, *, accounting: bool = False) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with private paths and ports on 127.0.0.1.

    With `accounting`, also a private MariaDB and slurmdbd (started before slurmctld, which
    then records every job there), the cluster registered with `sacctmgr`, and task statistics
    gathered every second (`jobacct_gather/linux`) so that TotalCPU and MaxRSS are real.
    Enforcement stays off: jobs of users without an association are recorded all the same.
    """
    munge_dir, slurm_dir = root / "munge", root / "slurm"
    for folder in (root, munge_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o711)  # munged wants its socket's path traversable
    for sub in ("state", "spool", "log"):
        (slurm_dir / sub).mkdir(parents=True, exist_ok=True)
    key = munge_dir / "munge.key"
    subprocess.run(["mungekey", "--create", "--keyfile", key], check=True, capture_output=True)
    socket_path = munge_dir / "munge.sock"
    processes: list[subprocess.Popen] = []
    conf = slurm_dir / "slurm.conf"

    def spawn(args: list, log: Path) -> subprocess.Popen:
        out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "SLURM_CONF": str(conf)},
            )
        finally:
            out.close()
        processes.append(proc)
        return proc

    try:
        munge_log = munge_dir / "munged.log"
        munged = spawn(
            [
                MUNGED,
                "--foreground",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_log}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            munge_dir / "munged.out",
        )
        _wait_for("munged", socket_path.exists, 10, munge_log, munged)

        hostname = socket.gethostname().split(".")[0]
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        dbd_port = free_port() if accounting else None
        if accounting:
            storage = [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=127.0.0.1",
                f"AccountingStoragePort={dbd_port}",
                # For slurmdbd connections this names the munge socket (AuthInfo is not used).
                f"AccountingStoragePass={socket_path}",
                "JobAcctGatherType=jobacct_gather/linux",
                "JobAcctGatherFrequency=task=1",
            ]
        else:
            storage = [
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
            ]
        conf.write_text(
            "\n".join(
                [
                    f"ClusterName={CLUSTER_NAME}",
                    f"SlurmctldHost={hostname}(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "CommunicationParameters=NoInAddrAny",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={socket_path}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "ReturnToService=2",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "MpiDefault=none",
                    *storage,
                    f"StateSaveLocation={slurm_dir / 'state'}",
                    f"SlurmdSpoolDir={slurm_dir / 'spool'}",
                    f"SlurmctldPidFile={slurm_dir / 'slurmctld.pid'}",
                    f"SlurmdPidFile={slurm_dir / 'slurmd.pid'}",
                    f"SlurmctldLogFile={slurm_dir / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={slurm_dir / 'log' / 'slurmd.log'}",
                    "SchedulerParameters=sched_interval=1",
                    f"NodeName={hostname} NodeAddr=127.0.0.1 CPUs={os.cpu_count()}"
                    f" RealMemory={mem_mb * 9 // 10} State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        cluster = SlurmCluster(root, conf, processes)
        if accounting:
            _start_slurmdbd(cluster, spawn, hostname, socket_path, dbd_port)
        ctld_log = slurm_dir / "log" / "slurmctld.log"
        ctld = spawn([SLURMCTLD, "-D", "-f", conf], slurm_dir / "log" / "slurmctld.out")
        _wait_for(
            "slurmctld",
            lambda: cluster.command("scontrol", "ping").returncode == 0,
            20,
            ctld_log,
            ctld,
        )
        slurmd = spawn([SLURMD, "-D", "-f", conf], slurm_dir / "log" / "slurmd.out")

        def node_idle() -> bool:
            return cluster.command("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"

        _wait_for("slurmd", node_idle, 30, slurm_dir / "log" / "slurmd.log", slurmd)
    except BaseException:
        for proc in reversed(processes):
            _stop(proc)
        raise
    return cluster


def _start_slurmdbd(
    cluster: SlurmCluster, spawn, hostname: str, munge_socket: Path, port: int
) -> None:
    """MariaDB, then slurmdbd (its conf beside slurm.conf, mode 600), then the cluster's row."""
    slurm_dir = cluster.conf.parent
    password = secrets.token_urlsafe(18)
    db_port = _start_mariadb(cluster.root / "mariadb", spawn, password=password)
    dbd_conf = slurm_dir / "slurmdbd.conf"  # slurmdbd reads it from SLURM_CONF's folder
    dbd_conf.touch(mode=0o600)
    dbd_conf.chmod(0o600)  # it holds the database password; slurmdbd insists on 600
    log = slurm_dir / "log" / "slurmdbd.log"
    dbd_conf.write_text(
        "\n".join(
            [
                "AuthType=auth/munge",
                f"AuthInfo=socket={munge_socket}",
                f"DbdHost={hostname}",
                "DbdAddr=127.0.0.1",
                f"DbdPort={port}",
                "SlurmUser=root",
                f"LogFile={log}",
                f"PidFile={slurm_dir / 'slurmdbd.pid'}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={db_port}",
                "StorageUser=slurm",
                f"StoragePass={password}",
                "StorageLoc=slurm_acct_db",
            ]
        )
        + "\n"
    )
    dbd = spawn([SLURMDBD, "-D"], slurm_dir / "log" / "slurmdbd.out")

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait_for("slurmdbd", listening, 30, log, dbd)
    added = cluster.command("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME)
    if added.returncode != 0:
        raise ServiceStartError(f"sacctmgr add cluster: {added.stdout}{added.stderr}{_read(log)}")


# -- pytest wrappers --------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster_root() -> Iterator[Path]:
    """Short private folder (unix socket paths must stay under 108 characters)."""
    root = Path(tempfile.mkdtemp(prefix="oct-cluster-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd_server(cluster_root: Path) -> Iterator[SshServer]:
    missing = missing_prerequisites(slurm=False)
    if missing:
        _unavailable("sshd tests need: " + ", ".join(missing))
    try:
        server = start_sshd(cluster_root / "sshd", slurm_conf=cluster_root / "slurm" / "slurm.conf")
    except (ServiceStartError, subprocess.CalledProcessError, OSError) as exc:
        _unavailable(f"could not start sshd: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster(cluster_root: Path, sshd_server: SshServer) -> Iterator[SlurmCluster]:
    missing = missing_prerequisites(slurm=True)
    if missing:
        _unavailable("Slurm tests need: " + ", ".join(missing))
    try:
        cluster = start_slurm(cluster_root)
    except (ServiceStartError, subprocess.CalledProcessError, OSError) as exc:
        _unavailable(f"could not start Slurm: {exc}")
    yield cluster
    cluster.stop()


@dataclass
class AccountingCluster:
    """A Slurm cluster that keeps accounting (MariaDB + slurmdbd), with its own sshd."""

    sshd: SshServer
    slurm: SlurmCluster
    startup_s: float


@pytest.fixture(scope="session")
def accounting_cluster() -> Iterator[AccountingCluster]:
    """A second, separate cluster: the shared `slurm_cluster` stays without accounting."""
    missing = missing_prerequisites(slurm=True, accounting=True)
    if missing:
        _unavailable("Slurm accounting tests need: " + ", ".join(missing))
    root = Path(tempfile.mkdtemp(prefix="oct-acct-"))
    started = time.monotonic()
    server = cluster = None
    try:
        server = start_sshd(root / "sshd", slurm_conf=root / "slurm" / "slurm.conf")
        cluster = start_slurm(root, accounting=True)
    except (ServiceStartError, subprocess.CalledProcessError, OSError) as exc:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start Slurm with accounting: {exc}")
    yield AccountingCluster(server, cluster, time.monotonic() - started)
    cluster.stop()
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


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
    """A resource logged in as root with the ed25519 key; closed after the test."""
    with sshd_server.resource() as resource:
        yield resource
