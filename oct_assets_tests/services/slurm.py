"""A private single-node Slurm on 127.0.0.1 (munge, slurmctld, slurmd; with accounting also
slurmdbd over a private MariaDB), and the fixtures that start it once per session.

`start_slurm(..., accounting=True)` also starts a private MariaDB (`mariadb.py`) and a private
slurmdbd, so that `sacct` answers from real job records (`accounting_cluster` fixture, with an
sshd of its own); the shared `slurm_cluster` keeps no accounting, like many small clusters, so
the `scontrol` fallback is exercised for real too. Munge key and socket, slurm.conf, state and
logs live in one private temp folder; nothing under /etc is written. Jobs submitted over SSH
find this Slurm through `SLURM_CONF`, which the sshd (`sshd.py`) sets. `two_nodes.py` starts a
third one: two slurmd, each in namespaces of its own (`netns.py`), for multi-node jobs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oct_assets_tests.services import sshd
from oct_assets_tests.services.daemons import (
    ServiceStartError,
    die_with_parent,
    free_port,
    missing,
    read_log,
    stop_process,
    unavailable,
    wait_for,
)
from oct_assets_tests.services.mariadb import MARIADB_TOOLS, MARIADBD, Spawn, start_mariadb
from oct_assets_tests.services.netns import NETNS_TOOLS, NodeNetwork
from oct_assets_tests.services.sshd import SshServer, start_sshd

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
SLURMDBD = "/usr/sbin/slurmdbd"
SLURM_TOOLS = ("mungekey", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
ACCOUNTING_TOOLS = (*MARIADB_TOOLS, "sacct", "sacctmgr")
CLUSTER_NAME = "octtest"


def missing_prerequisites(*, accounting: bool = False, namespaces: bool = False) -> list[str]:
    """What this machine lacks to run sshd and Slurm (empty when everything is there)."""
    binaries = (sshd.SSHD, MUNGED, SLURMCTLD, SLURMD)
    tools = (*sshd.SSH_TOOLS, *SLURM_TOOLS)
    if accounting:
        binaries, tools = (*binaries, SLURMDBD, MARIADBD), (*tools, *ACCOUNTING_TOOLS)
    if namespaces:
        tools = (*tools, *NETNS_TOOLS)
    return missing(binaries, tools)


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
            stop_process(proc)


def start_slurm(
    root: Path, *, accounting: bool = False, network: NodeNetwork | None = None
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with private paths and ports on 127.0.0.1.

    With `network` (`netns.py`), slurmctld listens on the host's address on its bridge and one
    slurmd runs in each node's namespaces (`-N <node>`, its own spool, pid and log by `%n`).

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
                preexec_fn=die_with_parent,
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
        wait_for("munged", socket_path.exists, 10, munge_log, munged)

        hostname = socket.gethostname().split(".")[0]
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        ctld_address = network.controller_address if network else "127.0.0.1"
        if network is None:  # the host itself is the one node
            node_lines = [
                f"NodeName={hostname} NodeAddr=127.0.0.1 CPUs={os.cpu_count()}"
                f" RealMemory={mem_mb * 9 // 10} State=UNKNOWN"
            ]
            per_node = ""
        else:  # nodes share the cores and split the memory; names are not hostnames
            node_lines = [
                f"NodeName={node_name(i)} NodeHostname={n.name} NodeAddr={n.address}"
                f" CPUs={os.cpu_count()} RealMemory={mem_mb * 9 // 10 // len(network.nodes)}"
                " State=UNKNOWN"
                for i, n in enumerate(network.nodes)
            ]
            per_node = "-%n"
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
                    f"SlurmctldHost={hostname}({ctld_address})",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "CommunicationParameters=NoInAddrAny",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # cred_expire also holds a requeued job back (120 s by default): the
                    # requeue tests would wait that long for every restart.
                    f"AuthInfo=socket={socket_path},cred_expire=10",
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
                    f"SlurmdSpoolDir={slurm_dir / 'spool'}{per_node}",
                    f"SlurmctldPidFile={slurm_dir / 'slurmctld.pid'}",
                    f"SlurmdPidFile={slurm_dir / f'slurmd{per_node}.pid'}",
                    f"SlurmctldLogFile={slurm_dir / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={slurm_dir / 'log' / f'slurmd{per_node}.log'}",
                    "SchedulerParameters=sched_interval=1",
                    *node_lines,
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        cluster = SlurmCluster(root, conf, processes)
        if accounting:
            start_slurmdbd(cluster, spawn, hostname, socket_path, dbd_port)
        ctld_log = slurm_dir / "log" / "slurmctld.log"
        ctld = spawn([SLURMCTLD, "-D", "-f", conf], slurm_dir / "log" / "slurmctld.out")
        wait_for(
            "slurmctld",
            lambda: cluster.command("scontrol", "ping").returncode == 0,
            20,
            ctld_log,
            ctld,
        )
        if network is None:
            slurmds = {
                hostname: spawn([SLURMD, "-D", "-f", conf], slurm_dir / "log" / "slurmd.out")
            }
        else:
            slurmds = {
                node_name(i): spawn(
                    [*n.ns.enter(), SLURMD, "-D", "-N", node_name(i), "-f", conf],
                    slurm_dir / "log" / f"slurmd-{node_name(i)}.out",
                )
                for i, n in enumerate(network.nodes)
            }

        def slurmd_log(name: str) -> Path:
            return slurm_dir / "log" / (f"slurmd-{name}.log" if network else "slurmd.log")

        def nodes_idle() -> bool:
            for name, slurmd in slurmds.items():
                if slurmd.poll() is not None:
                    why = read_log(slurmd_log(name))
                    raise ServiceStartError(f"slurmd {name} exited with {slurmd.returncode}: {why}")
            states = cluster.command("sinfo", "-h", "-N", "-o", "%T").stdout.split()
            return states == ["idle"] * len(slurmds)

        wait_for("slurmd", nodes_idle, 30, slurmd_log(next(iter(slurmds))), None)
    except BaseException:
        for proc in reversed(processes):
            stop_process(proc)
        raise
    return cluster


def node_name(i: int) -> str:
    """Slurm's NodeName of the i-th namespaced node: an alias, not its hostname, as Slurm allows
    (`NodeHostname`, `NodeAddr`), so nothing may assume that node names resolve."""
    return f"node{i + 1}"


def start_slurmdbd(
    cluster: SlurmCluster, spawn: Spawn, hostname: str, munge_socket: Path, port: int
) -> None:
    """MariaDB, then slurmdbd (its conf beside slurm.conf, mode 600), then the cluster's row."""
    slurm_dir = cluster.conf.parent
    password = secrets.token_urlsafe(18)
    db_port = start_mariadb(cluster.root / "mariadb", spawn, password=password)
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

    wait_for("slurmdbd", listening, 30, log, dbd)
    added = cluster.command("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME)
    if added.returncode != 0:
        raise ServiceStartError(
            f"sacctmgr add cluster: {added.stdout}{added.stderr}{read_log(log)}"
        )


@pytest.fixture(scope="session")
def slurm_cluster(cluster_root: Path, sshd_server: SshServer) -> Iterator[SlurmCluster]:
    lacking = missing_prerequisites()
    if lacking:
        unavailable("Slurm tests need: " + ", ".join(lacking))
    try:
        cluster = start_slurm(cluster_root)
    except (ServiceStartError, subprocess.CalledProcessError, OSError) as exc:
        unavailable(f"could not start Slurm: {exc}")
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
    lacking = missing_prerequisites(accounting=True)
    if lacking:
        unavailable("Slurm accounting tests need: " + ", ".join(lacking))
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
        unavailable(f"could not start Slurm with accounting: {exc}")
    yield AccountingCluster(server, cluster, time.monotonic() - started)
    cluster.stop()
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
