"""Atomic publishing of salted folders, and the sweep of builds whose builder died.

A folder is built under a hidden temporary sibling, its manifest is written last, and the whole
folder is renamed into place: a salted folder that exists is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from oct_assets.ml.formats import MANIFEST_JSON
from oct_assets.store.salt import is_complete


def fsync_path(path: Path) -> None:
    """Flush a written file, or a folder's entries, to disk, so that a rename cannot publish
    an empty file or folder after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary sibling, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    fsync_path(tmp)
    os.replace(tmp, path)


def _tmp_tag(pid: int | None = None) -> str:
    """Marks a temporary build folder with its builder's host and pid, so that leftovers of
    dead builders can be told from builds still running (also on a shared file system)."""
    return f".tmp-{socket.gethostname()}-{os.getpid() if pid is None else pid}-"


def sweep_dead_builds(asset_dir: Path) -> list[Path]:
    """Remove temporary build folders whose builder on this host has died; return them.

    Builders on other hosts are left alone: their liveness cannot be seen from here.
    """
    # Exactly "<pid>-<8 hex>" after this host's tag, so that host "login" never reads the
    # folders of host "login-2" as its own.
    ours = re.compile(r"\.[^/]*" + re.escape(_tmp_tag(0)[: -len("0-")]) + r"(\d+)-[0-9a-f]{8}")
    swept = []
    with os.scandir(asset_dir) as entries:
        for entry in entries:
            m = ours.fullmatch(entry.name)
            if m and not _alive(int(m[1])):
                shutil.rmtree(entry.path, ignore_errors=True)
                swept.append(Path(entry.path))
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def atomic_dir(final: Path, manifest: Mapping[str, Any]) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to fill; on success write the manifest and rename.

    On any exception the temporary folder is removed, so `final` never exists half-written;
    a SIGKILLed build leaves its folder behind, and the next build of the asset sweeps it.
    If another run completed `final` meanwhile, its folder wins and ours is discarded: both
    have the same salt, so both hold the same result.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_builds(final.parent)
    tmp = final.with_name(f".{final.name}{_tmp_tag()}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        write_json_atomic(tmp / MANIFEST_JSON, dict(manifest))
        fsync_path(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
