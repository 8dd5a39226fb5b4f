#!/usr/bin/env bash
# Install the real services the cluster tests run against: OpenSSH server, a single-node
# Slurm (munge, slurmctld, slurmd, client tools incl. sacct/sacctmgr) and its accounting
# (slurmdbd with a MariaDB server). Idempotent: skips apt when every binary is already present.
# Needs root on Debian/Ubuntu. Nothing is started here; the pytest fixtures in
# oct_assets_tests/services/ start (and stop) private daemons on 127.0.0.1.
set -euo pipefail

packages=(openssh-server openssh-client munge slurmctld slurmd slurm-client slurmdbd mariadb-server
          iproute2)  # ip: the two-node cluster's namespaces and veths (services/netns.py)
binaries=(/usr/sbin/sshd /usr/bin/scp /usr/bin/ssh-keygen /usr/sbin/munged /usr/sbin/slurmctld
          /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/squeue /usr/bin/scontrol /usr/bin/scancel
          /usr/bin/sacct /usr/bin/sacctmgr /usr/sbin/slurmdbd /usr/sbin/mariadbd
          /usr/bin/mariadb-install-db /usr/bin/mariadb /usr/bin/mariadb-admin /sbin/ip
          /usr/bin/unshare /usr/bin/nsenter)

missing=0
for bin in "${binaries[@]}"; do
    [[ -x "$bin" ]] || missing=1
done

if [[ "$missing" == 1 ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "install_cluster.sh: must run as root to install: ${packages[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${packages[@]}"
fi

# Installing the packages may start the system's own daemons (sshd on :22, MariaDB on :3306;
# slurmdbd has no config so it stays down), or not under a container's policy-rc.d: either way
# the fixtures start private ones on free loopback ports, with their own data folders, so
# nothing else is required here except the privilege-separation directory sshd insists on.
mkdir -p /run/sshd
chmod 0755 /run/sshd

for bin in "${binaries[@]}"; do
    if [[ ! -x "$bin" ]]; then
        echo "install_cluster.sh: $bin still missing after install" >&2
        exit 1
    fi
done
echo "install_cluster.sh: sshd, munge, Slurm and slurmdbd + MariaDB are installed"
