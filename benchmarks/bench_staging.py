"""Staging a sample of real scans to the loopback sshd: `staging.stage_folder` against
`tar -cf - . | ssh host tar -xf -` on the same files, and the old per-file SFTP path beside them.

    sudo .venv/bin/python benchmarks/bench_staging.py [--scans 20000] [--rounds 3]

Builds an OCT2017-layout folder of N real scans (byte copies, not hard links, of the files under
$OCT_REAL_DATA or /work/shared/real_oct/OCT2017, cycled), starts a private sshd on 127.0.0.1 (the
test fixtures' `start_sshd`; needs root), and stages the folder into a fresh remote folder per
run, candidates interleaved. `stage_folder` hashes every file locally, streams one tar over a
paramiko channel, checks all files with one remote `sha256sum -c` and writes its marker;
`tar | ssh` verifies nothing. Prints the medians and the ratios to `tar | ssh` (goal: staging
<= 1.5x).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import alternate, report
from oct_assets.cluster import staging, transfer
from oct_assets_tests.services.sshd import start_sshd

REAL = Path(os.environ.get("OCT_REAL_DATA", "/work/shared/real_oct/OCT2017"))


def build_tree(dest: Path, n: int) -> int:
    """N byte copies of real scans in the OCT2017 layout; returns the total bytes."""
    sources = sorted(REAL.rglob("*.jpeg"))
    if not sources:
        raise SystemExit(f"no real scans under {REAL}")
    total = 0
    for i, src in zip(range(n), itertools.cycle(sources)):
        label = src.parent.name
        target = dest / "train" / label / f"{label}-{9_000_000 + i}-1.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        total += target.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-file-rounds", type=int, default=1, help="0 skips the old path")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="oct-bench-stage-"))
    server = None
    try:
        tree = workdir / "sample"
        size = build_tree(tree, args.scans)
        server = start_sshd(workdir / "sshd")
        ssh = [
            "ssh",
            "-p",
            str(server.port),
            "-i",
            str(server.keys["ed25519"]),
            "-o",
            f"UserKnownHostsFile={server.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            f"{server.user}@127.0.0.1",
        ]
        with server.resource() as res:
            session = res.session
            remote = res.session.resolve("bench")

            def fresh() -> str:
                session.run(f"rm -rf {remote}", check=True)
                return f"{remote}/{uuid.uuid4().hex[:8]}"

            def stage() -> None:
                staging.stage_folder(session, tree, fresh(), key=uuid.uuid4().hex)

            def tar_ssh() -> None:
                dest = fresh()
                subprocess.run(
                    f"tar -cf - -C {tree} . | {' '.join(ssh)}"
                    f" 'mkdir -p {dest} && tar -xf - -C {dest}'",
                    shell=True,
                    check=True,
                )

            def per_file() -> None:
                transfer.upload_dir(session, tree, fresh())

            times = alternate(args.rounds, stage_folder=stage, tar_ssh=tar_ssh)
            if args.per_file_rounds:
                times.update(alternate(args.per_file_rounds, per_file_sftp=per_file))
            session.run(f"rm -rf {remote}")
        print(f"{args.scans} real scans, {size / 1e6:.0f} MB, cores {os.cpu_count()}")
        report({k: times[k] for k in ("stage_folder", "tar_ssh")}, "tar_ssh", "<= 1.5")
        if args.per_file_rounds:
            report({k: times[k] for k in ("per_file_sftp", "tar_ssh")}, "tar_ssh", "old path")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
