"""Separate hosts for the tests' Slurm nodes: each node a network, UTS and mount namespace of
its own (hostname, address, /etc/hosts), all on a private bridge with the controller.

    host netns (slurmctld, sshd, munged)  10.A.B.1 ─veth─┐
                                          fabric netns:  br0 ─veth─ node 0: eth0 10.A.B.11, octh1
                                                             └─veth─ node 1: eth0 10.A.B.12, octh2

Every namespace is held by a process of ours (`unshare ... sleep`, which dies with pytest), not
by a name under /run/netns: when it dies the namespace goes, and with it every veth end inside
and its peer. A crashed run (even `kill -9` of pytest) therefore leaves nothing behind, and the
link names (a random tag) and the subnet (a random 10.x.y.0/24 that no host route overlaps) are
per harness instance, so parallel sessions do not meet. Not separated: the file system (shared,
like NFS on a real cluster), processes (one PID namespace), users, CPUs and memory. Folders in
`node_local` are bind-mounted per node (a node-local scratch disk at the same path everywhere).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from oct_assets_tests.services.daemons import (
    ServiceStartError,
    checked,
    die_with_parent,
    stop_process,
)

NETNS_TOOLS = ("ip", "unshare", "nsenter", "mount")
SUBNET_POOL = ipaddress.ip_network("10.128.0.0/9")  # /24s are drawn from here


@dataclass
class Namespace:
    """Namespaces held open by one `sleep` process; `enter` prefixes a command to run inside."""

    holder: subprocess.Popen
    kinds: tuple[str, ...]

    @property
    def pid(self) -> int:
        return self.holder.pid

    def enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), *(f"--{k}" for k in self.kinds), "--"]

    def run(self, what: str, *args: str) -> None:
        checked(what, [*self.enter(), *args], timeout=30)

    def stop(self) -> None:
        stop_process(self.holder)


def hold(kinds: tuple[str, ...]) -> Namespace:
    """New namespaces of `kinds` (net, uts, mount), held by a child that dies with pytest."""
    proc = subprocess.Popen(
        ["unshare", *(f"--{k}" for k in kinds), "--", "sleep", "infinity"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    ns = Namespace(proc, kinds)
    # unshare execs sleep once the namespaces exist: wait until the pid runs sleep.
    for _ in range(200):
        if proc.poll() is not None:
            raise ServiceStartError(f"unshare {kinds} failed: {proc.stderr.read().decode()}")
        try:
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep":
                return ns
        except OSError:
            pass
        time.sleep(0.01)
    stop_process(proc)
    raise ServiceStartError(f"unshare {kinds} did not start sleep")


def free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no address or route of the host's namespace overlaps."""
    taken = []
    for cmd in (["ip", "-4", "-o", "addr"], ["ip", "-4", "route"]):
        for word in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    subnets = list(SUBNET_POOL.subnets(new_prefix=24))
    for _ in range(100):
        subnet = subnets[secrets.randbelow(len(subnets))]
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise ServiceStartError(f"no free /24 in {SUBNET_POOL} for the test nodes")


@dataclass
class Node:
    """One compute node: its hostname, address and namespaces."""

    name: str
    address: str
    ns: Namespace


@dataclass
class NodeNetwork:
    """The bridge, the controller's address on it and the nodes; `stop` removes all of it."""

    controller_address: str
    nodes: list[Node]
    fabric: Namespace
    tag: str
    hosts_file: Path

    def stop(self) -> None:
        for node in self.nodes:
            node.ns.stop()
        self.fabric.stop()  # takes the bridge and the host's veth end with it
        # A set-up that failed half-way may have left a veth end in the host's namespace.
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"o{self.tag}"):
                subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def start_network(
    root: Path, names: list[str], controller: str, node_local: tuple[Path, ...] = ()
) -> NodeNetwork:
    """A namespace per node on one bridge with the host (the controller, named `controller`).

    Each node gets hostname `name`, address 10.x.y.(11+i) and an /etc/hosts naming the
    controller and every node, so that names resolve on every node as DNS would on a real
    cluster (torch's c10d rendezvous and gloo resolve the node's own hostname). Each path in
    `node_local` (it must exist) is covered on node n by a bind mount of
    `root/<n>/<path's name>`, created with the same owner.
    """
    tag = secrets.token_hex(3)
    subnet = free_subnet()
    hosts = list(subnet.hosts())
    prefix = subnet.prefixlen
    controller_address = str(hosts[0])
    root.mkdir(parents=True, exist_ok=True)
    hosts_file = root / "hosts"
    addresses = {name: str(hosts[10 + i]) for i, name in enumerate(names)}
    lines = ["127.0.0.1 localhost", "::ffff:127.0.0.1 localhost"]
    lines.append(f"{controller_address} {controller}")
    lines += [f"{addr} {name}" for name, addr in addresses.items()]
    # c10d's store sees its peers on a dual-stack socket, as v4-mapped addresses, and warns
    # unless those resolve back to a name too.
    lines += [f"::ffff:{addr} {name}" for name, addr in addresses.items()]
    hosts_file.write_text("\n".join(lines) + "\n")
    hosts_file.chmod(0o644)
    host_link = f"o{tag}h"
    fabric = hold(("net",))
    network = NodeNetwork(controller_address, [], fabric, tag, hosts_file)
    try:
        fabric.run("bridge", "ip", "link", "add", "br0", "type", "bridge")
        fabric.run("bridge up", "ip", "link", "set", "br0", "up")
        _veth(host_link, f"o{tag}f", fabric)
        checked(
            "host address",
            ["ip", "addr", "add", f"{controller_address}/{prefix}", "dev", host_link],
        )
        checked("host link up", ["ip", "link", "set", host_link, "up"])
        for i, name in enumerate(names):
            ns = hold(("net", "uts", "mount"))
            network.nodes.append(Node(name, addresses[name], ns))
            inner = f"o{tag}n{i}"
            checked(
                "node veth",
                ["ip", "link", "add", inner, "type", "veth", "peer", "name", f"o{tag}b{i}"],
            )
            checked("node end", ["ip", "link", "set", inner, "netns", str(ns.pid)])
            _attach(f"o{tag}b{i}", fabric)
            ns.run("rename", "ip", "link", "set", inner, "name", "eth0")
            ns.run("address", "ip", "addr", "add", f"{addresses[name]}/{prefix}", "dev", "eth0")
            ns.run("eth0 up", "ip", "link", "set", "eth0", "up")
            ns.run("lo up", "ip", "link", "set", "lo", "up")
            ns.run("hostname", "hostname", name)
            ns.run("/etc/hosts", "mount", "--bind", str(hosts_file), "/etc/hosts")
            for path in node_local:
                local = root / name / path.name
                local.mkdir(parents=True, exist_ok=True)
                os.chown(local, path.stat().st_uid, path.stat().st_gid)
                ns.run(f"node-local {path}", "mount", "--bind", str(local), str(path))
    except BaseException:
        network.stop()
        raise
    return network


def _veth(host_end: str, other_end: str, fabric: Namespace) -> None:
    """A veth pair from the host's namespace into the bridge."""
    checked("veth", ["ip", "link", "add", host_end, "type", "veth", "peer", "name", other_end])
    _attach(other_end, fabric)


def _attach(link: str, fabric: Namespace) -> None:
    """Move `link` into the fabric namespace and plug it into the bridge."""
    checked("to fabric", ["ip", "link", "set", link, "netns", str(fabric.pid)])
    fabric.run("to bridge", "ip", "link", "set", link, "master", "br0", "up")
