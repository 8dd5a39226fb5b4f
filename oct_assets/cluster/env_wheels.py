"""Wheels for an offline build of the managed environment, downloaded here, no SSH: `pip
download` of the pins and their dependencies for the cluster's Python and platform (which the
probe reports), for clusters whose nodes reach no package index."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from oct_assets.cluster.env_scripts import RemotePython
from oct_assets.cluster.errors import ClusterError


class WheelDownloadError(ClusterError):
    """The wheels of the node requirements could not be had for the cluster's platform."""


def wheel_platforms(python: RemotePython) -> list[str]:
    """pip's `--platform` tags for the cluster's glibc and machine, newest manylinux first."""
    if not python.libc:
        raise WheelDownloadError(
            f"offline_wheels needs a glibc Linux Python on the cluster; {python.executable}"
            " reports no glibc. Build the environment yourself and set slurm.python"
        )
    major, minor = (int(x) for x in python.libc.split(".")[:2])
    arch = python.machine
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    return [*tags, f"manylinux2014_{arch}", f"linux_{arch}"]


def download_wheels(
    pins: Sequence[str], index_url: str | None, python: RemotePython, dest: Path
) -> None:
    """`pip download` of `pins` and their dependencies into `dest`, as wheels only (a source
    package would need a compiler on the cluster) for the cluster's Python."""
    major, minor = python.version.split(".")[:2]
    impl = {"CPython": "cp", "PyPy": "pp"}.get(python.implementation, "cp")
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", dest]
    command += ["--python-version", f"{major}.{minor}", "--implementation", impl]
    command += ["--abi", f"{impl}{major}{minor}"]
    for tag in wheel_platforms(python):
        command += ["--platform", tag]
    if index_url:
        command += ["--extra-index-url", index_url]
    command += ["--disable-pip-version-check", *pins]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise WheelDownloadError(
            f"pip download of {', '.join(pins)} for Python {python.version} on"
            f" {python.machine} failed:\n{tail}"
        )
