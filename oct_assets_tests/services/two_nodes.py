"""A two-node Slurm with its own sshd: two slurmd, each in a network, UTS and mount namespace
of its own (`netns.py`), so multi-node jobs (torchrun's rendezvous across hosts) run for real.

A separate session fixture, imported by the tests that use it, so `slurm_cluster` stays one
node on 127.0.0.1 and costs the other tests nothing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oct_assets_tests.services.daemons import ServiceStartError, unavailable
from oct_assets_tests.services.netns import NodeNetwork, start_network
from oct_assets_tests.services.slurm import SlurmCluster, missing_prerequisites, start_slurm
from oct_assets_tests.services.sshd import SshServer, start_sshd


@dataclass
class TwoNodeCluster:
    """Two compute nodes, each in its own namespaces (`netns.py`), with their own sshd.

    `node_local_remote` is a remote folder whose `cache/` is node-local: a separate folder on
    each node (a bind mount), like a node's scratch disk; the rest of the file system is shared.
    """

    sshd: SshServer
    slurm: SlurmCluster
    network: NodeNetwork
    node_local_remote: Path

    def node_local(self, node: str, path: Path) -> Path:
        """Where `path` (under `node_local_remote`) lives for `node`."""
        return self.network.hosts_file.parent / node / path.relative_to(self.node_local_remote)


TWO_NODES = ("octh1", "octh2")  # hostnames; Slurm knows them as node1 and node2


@pytest.fixture(scope="session")
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    """A third, separate cluster: `slurm_cluster` stays one node on 127.0.0.1."""
    lacking = missing_prerequisites(namespaces=True)
    if lacking:
        unavailable("two-node Slurm tests need: " + ", ".join(lacking))
    root = Path(tempfile.mkdtemp(prefix="oct-2n-"))
    server = network = cluster = None
    try:
        server = start_sshd(root / "sshd", slurm_conf=root / "slurm" / "slurm.conf")
        local_remote = server.remote_dir / "nodelocal"
        (local_remote / "cache").mkdir(parents=True)
        for folder in (local_remote, local_remote / "cache"):
            shutil.chown(folder, server.user, server.user)
        network = start_network(
            root / "nodes",
            list(TWO_NODES),
            socket.gethostname().split(".")[0],
            node_local=(local_remote / "cache",),
        )
        cluster = start_slurm(root, network=network)
    except (ServiceStartError, subprocess.CalledProcessError, OSError) as exc:
        for part in (network, server):
            if part is not None:
                part.stop()
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"could not start the two-node Slurm: {exc}")
    yield TwoNodeCluster(server, cluster, network, local_remote)
    cluster.stop()
    network.stop()
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
