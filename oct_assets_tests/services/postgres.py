"""A PostgreSQL server of the tests' own on 127.0.0.1, in a temporary folder, for the session.

PostgreSQL comes from Debian (`.ci/install_ui.sh`). Without it (or without psycopg2) the tests
that use it skip, or fail when `OCT_REQUIRE_CLUSTER_TESTS=1` (CI).
"""

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oct_assets_tests.services.daemons import free_port, unavailable


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        unavailable("PostgreSQL server not installed (.ci/install_ui.sh installs it, as root)")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """What `deploy/dagster.yaml` reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db,
        }

    def create_database(self, name: str) -> "Postgres":
        """A new, empty database on this server (the same user), for one instance."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname="postgres",
        )  # fmt: skip
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return Postgres(self.port, self.user, self.password, name)

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        with (
            psycopg2.connect(
                host="127.0.0.1",
                port=self.port,
                user=self.user,
                password=self.password,
                dbname=self.db,
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(sql)
            return cur.fetchall()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of its own on 127.0.0.1, password-authenticated, with an empty db."""
    try:
        import psycopg2
    except ImportError:
        unavailable("psycopg2 is not installed (pip install -e '.[test]')")
    bin_dir = postgres_bin()
    # Under /tmp and owned by the server's user: postgres refuses to run as root.
    root = Path(tempfile.mkdtemp(prefix="oct_pg_", dir="/tmp"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    data, port = root / "data", free_port()

    def run(*command: object) -> None:
        cmd = [*as_postgres, *map(str, command)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    run(bin_dir / "initdb", "-D", data, "-U", "dagster", "--auth=scram-sha-256",
        f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions")  # fmt: skip
    pwfile.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start")
    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="dagster", password=password, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE oct_dagster")
        conn.close()
        yield Postgres(port, "dagster", password, "oct_dagster")
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
