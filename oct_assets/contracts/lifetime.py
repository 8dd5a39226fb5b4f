"""Processes that die with their parent, and the identity of a process that survives pid reuse.

The trainer dies with the process that started it, decode workers with the trainer, and every
Dagster step process with its run process. Light on purpose (no torch, no numpy): the trainer's
entry point and the Dagster steps both call it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent: int | None = None) -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies (kill -9 included).

    `parent`: the pid this process was started by. If it died before this call, the kernel
    will never send the signal (the new parent is a reaper), so this process ends at once.
    An orphaned trainer would keep writing into a build folder whose lock died with its
    builder; an orphaned step would publish its folder and move pointers for a dead run.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def process_identity(pid: int) -> str | None:
    """`<host>:<pid>:<start time>` of a live process on this host, None when there is none.

    The start time (clock ticks since boot, /proc/<pid>/stat field 22) tells a process from a
    later one that reuses its pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie has ended; only its exit status is left
        return None
    return f"{socket.gethostname()}:{pid}:{fields[19]}"


def is_gone(identity: str) -> bool:
    """True when `identity` (from `process_identity`) names a process of this host that has
    ended; False while it runs, and for another host's process (this host cannot tell)."""
    host, pid, _ = identity.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return process_identity(int(pid)) != identity
