#!/usr/bin/env bash
# Install what the UI and team-deployment tests run against: Chromium (screenshots of the UI) and
# the PostgreSQL server (deploy/dagster.yaml), from Debian; dagster-postgres is in the test
# extra. Idempotent: skips apt when every binary is already present. Needs root on
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

echo "install_ui.sh: $(chromium --version 2>/dev/null | head -1)," \
    "PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -1)"
