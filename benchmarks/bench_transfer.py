"""Download throughput of ClusterResource against OpenSSH scp, side by side on loopback.

    sudo .venv/bin/python benchmarks/bench_transfer.py [--size-mb 200] [--rounds 3]

Starts a private sshd on 127.0.0.1 (the test services' `start_sshd`; needs root), or reuses the
one described by OCT_BENCH_* variables (HOST must be loopback, PORT, USER, KEY_FILE,
KNOWN_HOSTS, REMOTE_DIR). Writes a random file remotely, then fetches it alternately with
`transfer.download` (SFTP, sha256-verified, fsynced, renamed into place) and with
`scp` (OpenSSH >= 9 speaks SFTP too; no verification, no fsync; its default cipher is
chacha20-poly1305, `--scp-cipher aes128-gcm@openssh.com` gives it the resource's cipher),
swapping the order each round so that neither always runs on a warmer machine. Prints MB/s
per run, the medians and their ratio (goal: resource >= 0.8x scp), and the peak memory the
downloads added.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oct_assets.cluster import transfer
from oct_assets.resources.cluster import ClusterResource
from oct_assets_tests.services.sshd import SshServer, start_sshd

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _from_env() -> tuple[ClusterResource, str, str, str] | None:
    env = {k: os.environ.get(f"OCT_BENCH_{k}") for k in ("HOST", "PORT", "USER", "KEY_FILE")}
    if not env["HOST"]:
        return None
    if env["HOST"] not in LOOPBACK:
        raise SystemExit(f"OCT_BENCH_HOST={env['HOST']}: this benchmark only targets loopback")
    known_hosts = os.environ.get("OCT_BENCH_KNOWN_HOSTS", "~/.ssh/known_hosts")
    remote_dir = os.environ.get("OCT_BENCH_REMOTE_DIR", "/tmp")
    res = ClusterResource(
        host=env["HOST"],
        port=int(env["PORT"] or 22),
        username=env["USER"],
        key_file=env["KEY_FILE"],
        known_hosts=known_hosts,
        remote_dir=remote_dir,
    )
    return res, str(Path(env["KEY_FILE"] or "").expanduser()), known_hosts, env["USER"] or ""


def _scp(
    port: int, key: str, known_hosts: str, user: str, remote: str, local: Path, cipher: str | None
) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "scp",
            "-q",
            *(["-c", cipher] if cipher else []),
            "-P",
            str(port),
            "-i",
            key,
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            f"{user}@127.0.0.1:{remote}",
            str(local),
        ],
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scp-cipher",
        help="e.g. aes128-gcm@openssh.com (what the resource prefers); default: scp's own",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="oct-bench-"))
    server: SshServer | None = None
    try:
        reused = _from_env()
        if reused:
            res, key, known_hosts, user = reused
            port = res.port or 22
        else:
            server = start_sshd(workdir / "sshd")
            res = server.resource()
            key, known_hosts = str(server.keys["ed25519"]), str(server.known_hosts)
            user, port = server.user, server.port
        with res:
            remote = res.session.resolve("bench_transfer.bin")
            res.session.run(f"head -c {args.size_mb}M /dev/urandom > {remote}", check=True)
            size = res.session.stat(remote).size
            ours: list[float] = []
            theirs: list[float] = []
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for round_ in range(args.rounds):
                order = ("resource", "scp") if round_ % 2 == 0 else ("scp", "resource")
                for tool in order:
                    target = workdir / f"{tool}.bin"
                    if tool == "resource":
                        seconds = transfer.download(res.session, remote, target).seconds
                        ours.append(size / seconds / 1e6)
                    else:
                        seconds = _scp(
                            port, key, known_hosts, user, remote, target, args.scp_cipher
                        )
                        theirs.append(size / seconds / 1e6)
                    print(f"round {round_ + 1} {tool:8s} {size / seconds / 1e6:7.1f} MB/s")
                    target.unlink()
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            res.session.run(f"rm -f {remote}")
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(
            f"median: resource {statistics.median(ours):.1f} MB/s, scp"
            f" {statistics.median(theirs):.1f} MB/s, ratio {ratio:.3f}"
            f" ({'meets' if ratio >= 0.8 else 'below'} the 0.8x goal)"
        )
        print(f"peak RSS grew by {(rss_after - rss_before) / 1024:.0f} MiB during the downloads")
        print(f"file {size / 1e6:.0f} MB, cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
