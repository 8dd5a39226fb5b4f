#!/usr/bin/env bash
# Install what the UI and team-deployment tests run against: Chromium (screenshots of the UI) and
# the PostgreSQL server (deploy/dagster.yaml), from Debian; and dagster-postgres into the
# project's .venv. Idempotent: skips apt when every binary is already present. Needs root on
# Debian/Ubuntu. Nothing is started here: the tests start their own PostgreSQL on 127.0.0.1 in a
# temporary folder, and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(postgresql chromium)

have_all() {
    command -v chromium >/dev/null 2>&1 || return 1
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || return 1
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || return 1
    command -v runuser >/dev/null 2>&1 || return 1
}

if ! have_all; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "install_ui.sh: must run as root to install: ${packages[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${packages[@]}"
fi

if ! have_all; then
    echo "install_ui.sh: chromium or the PostgreSQL server binaries still missing" >&2
    exit 1
fi

# dagster-postgres: the release paired with dagster 1.13.28 (0.29.28) is not on the package
# index, and 0.29.27 pins dagster==1.13.27, so it cannot be a dependency in pyproject.toml.
# Install 0.29.27 without that pin; deploy/README.md says why and how to undo this.
DAGSTER_POSTGRES=dagster-postgres==0.29.27
[[ -x .venv/bin/pip ]] || python3 -m venv .venv
.venv/bin/pip install -q --no-deps "$DAGSTER_POSTGRES"
.venv/bin/pip install -q "psycopg2-binary>=2.9"

echo "install_ui.sh: $(chromium --version 2>/dev/null | head -1)," \
    "PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -1), $DAGSTER_POSTGRES in .venv"
