"""Starting and stopping the tests' daemons: free loopback ports, readiness, logs, and death
with pytest (no daemon outlives a run). Used by `sshd.py`, `slurm.py` and `mariadb.py`.

Missing binaries or a non-root user skip the tests that need a service, unless
`OCT_REQUIRE_CLUSTER_TESTS=1`, which turns every unavailable service or failed start into a
test failure.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "OCT_REQUIRE_CLUSTER_TESTS"


class ServiceStartError(RuntimeError):
    """A test service did not come up; the message carries its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(binaries: tuple[str, ...], tools: tuple[str, ...]) -> list[str]:
    """Which of the daemons (absolute paths) and tools (on PATH) this machine lacks, and root
    (sshd and slurmd must run as root); empty when everything is there."""
    found = [b for b in binaries if not os.access(b, os.X_OK)]
    found += [t for t in tools if shutil.which(t) is None]
    if os.geteuid() != 0:
        found.append("root (sshd and slurmd must run as root)")
    return found


def wait_for(what: str, ready, timeout_s: float, log: Path, proc: subprocess.Popen | None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceStartError(f"{what} exited with {proc.returncode}: {read_log(log)}")
        if ready():
            return
        time.sleep(0.1)
    raise ServiceStartError(f"{what} not ready after {timeout_s}s: {read_log(log)}")


def read_log(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except FileNotFoundError:
        return f"({path} missing)"


def stop_process(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if pytest dies, so no daemon outlives a run."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (found through /proc, so no psutil is needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def checked(what: str, args: list, **kwargs) -> None:
    """Run a set-up command; a failure is a ServiceStartError carrying its output."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise ServiceStartError(f"{what} timed out after {exc.timeout}s") from exc
    if done.returncode != 0:
        raise ServiceStartError(f"{what} exited with {done.returncode}: {done.stderr[-2000:]}")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it where every service is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)
