"""A private MariaDB for slurmdbd (`slurm.py`, accounting): its own datadir and socket, TCP on
a free loopback port, durability off (a throwaway database)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from oct_assets_tests.services.daemons import checked, free_port, wait_for

MARIADBD = "/usr/sbin/mariadbd"
MARIADB_TOOLS = ("mariadb-install-db", "mariadb")
Spawn = Callable[[list, Path], subprocess.Popen]

# A throwaway database: durability (fsync, doublewrite) costs start-up time and buys nothing.
_THROWAWAY_DB = (
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-flush-method=nosync",
    "--innodb-buffer-pool-size=64M",
)


def start_mariadb(db_dir: Path, spawn: Spawn, *, password: str) -> int:
    """A private MariaDB for slurmdbd: own datadir and socket, TCP on a free loopback port.

    Returns the port. The `slurm` SQL user (password from stdin, never on a command line) may
    connect over TCP from 127.0.0.1 only; root logs in through the private socket.
    """
    db_dir.mkdir(parents=True, exist_ok=True)
    data, sock, log = db_dir / "data", db_dir / "mariadb.sock", db_dir / "mariadb.log"
    checked(
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

    wait_for("mariadb", accepts, 30, log, server)
    grant = (
        f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';\n"
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\n"
    )
    checked(
        "mariadb (create the slurm user)",
        ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"],
        input=grant,
        timeout=30,
    )
    return port
