"""The managed training environment: first build against reuse, on the test cluster (loopback).

    sudo .venv/bin/python benchmarks/bench_environment.py [--builds 2] [--reuses 5] [--offline]

Starts a private sshd on 127.0.0.1 (the test services' `start_sshd`; needs root; no Slurm: the
environment is built on the login node). Each build is `ensure_environment` of the shipped
node requirements (torch, numpy, pillow, dagster-pipes) into a fresh remote folder: probe the
base Python, lock, venv + install (pip here: uv is not on this machine's PATH), check, publish;
the cluster user gets this machine's pip sources, as in the tests, so torch is the CPU wheel
on local disk.
Each reuse is `ensure_environment` again on a built env: the probe, the marker and the check
(which imports torch), no installer. The first build fills pip's cache of the cluster user,
so later builds show a warm-cache build. Prints every time, the medians and the ratio
build / reuse; `--offline` builds from wheels downloaded here and staged.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oct_assets.cluster.environment import EnvironmentSpec, ensure_environment
from oct_assets.cluster.layout import RemoteLayout
from oct_assets_tests.integration.test_cluster_environment import give_to_user, local_pip_sources
from oct_assets_tests.services.sshd import start_sshd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=2, help="fresh builds (first: cold cache)")
    parser.add_argument("--reuses", type=int, default=5, help="reuses of the last build")
    parser.add_argument("--offline", action="store_true", help="build from staged wheels")
    args = parser.parse_args()
    spec = EnvironmentSpec.shipped(offline=args.offline)
    workdir = Path(tempfile.mkdtemp(prefix="oct-bench-env-"))
    server = start_sshd(workdir / "sshd")
    if pip_conf := local_pip_sources():  # as the tests do: torch's CPU wheel from this disk
        conf = server.root / "home" / ".config" / "pip" / "pip.conf"
        conf.parent.mkdir(parents=True)
        conf.write_text(pip_conf)
        give_to_user(server, conf.parent.parent, conf.parent, conf)
    builds: list[float] = []
    reuses: list[float] = []
    try:
        for i in range(args.builds):
            root = server.remote_dir / f"build-{i}"
            with server.resource(remote_dir=str(root), command_timeout_s=3600.0) as res:
                layout = RemoteLayout(res.session.remote_root())
                t = time.perf_counter()
                env = ensure_environment(res.session, layout, spec, log=lambda _line: None)
                builds.append(time.perf_counter() - t)
                assert env.built, "a fresh remote folder must build"
                print(f"build {i + 1}: {builds[-1]:.1f}s -> {env.path} ({env.facts})")
                for j in range(args.reuses if i == args.builds - 1 else 0):
                    t = time.perf_counter()
                    again = ensure_environment(res.session, layout, spec, log=lambda _line: None)
                    reuses.append(time.perf_counter() - t)
                    assert not again.built
                    print(f"reuse {j + 1}: {reuses[-1]:.2f}s")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    first, reuse = builds[0], statistics.median(reuses)
    print(f"first build (cold pip cache): {first:.1f}s")
    if len(builds) > 1:
        print(f"later builds (warm cache): median {statistics.median(builds[1:]):.1f}s")
    print(f"reuse: median {reuse:.2f}s (min {min(reuses):.2f}s, n={len(reuses)})")
    print(f"ratio first build / reuse = {first / reuse:.1f}x")


if __name__ == "__main__":
    main()
