"""Processes that die with their parent: the trainer with the process that started it, decode
workers with the trainer. Light on purpose (no torch, no numpy): the trainer's entry point and
the Dagster step both call it."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies (kill -9 included).

    An orphaned trainer would keep writing into a build folder whose lock died with its
    builder; orphaned decode workers would keep multiprocessing's resource tracker alive.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
