"""Atomic publishing of salted folders, and the sweep of builds whose builder died.

A folder is built under a hidden temporary sibling, its manifest is written last, and the whole
folder is renamed into place: a salted folder that exists is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from oct_assets.contracts.files import abandoned, exclusive_lock, fsync_path, write_json_atomic
from oct_assets.contracts.formats import MANIFEST_JSON
from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.store.salt import is_complete


def _tmp_name(final: Path) -> str:
    """`.<salt>.tmp-<host>-<pid>-<8 hex>`: host and pid say who built it (for people); liveness
    is the lock its builder holds (`_locked_tmp_dir`), never these names."""
    return f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


TMP_RE = re.compile(r"\..+\.tmp-.+")


def sweep_dead_builds(asset_dir: Path) -> list[Path]:
    """Remove temporary build folders no live builder holds; return them.

    A builder holds an exclusive `flock` on its temporary folder for the whole build, and the
    kernel drops it when the builder dies (kill -9 included). So a folder whose lock can be
    taken is dead, in any PID namespace or container, and on a shared file system that
    supports `flock` (local disks, NFSv4, CephFS, Lustre with `-o flock`), on any host.
    """
    swept = []
    with os.scandir(asset_dir) as entries:
        tmps = [Path(e.path) for e in entries if TMP_RE.fullmatch(e.name) and e.is_dir()]
    for tmp in tmps:
        with abandoned(tmp) as dead:
            if dead:
                shutil.rmtree(tmp, ignore_errors=True)
                swept.append(tmp)
    return swept


def _locked_tmp_dir(final: Path) -> tuple[Path, int]:
    """Create a temporary sibling of `final` and take the lock that marks its builder alive.

    Returns the folder and the open descriptor holding the lock (not inherited by children).
    A sweep can delete the folder between mkdir and flock; then try another name.
    """
    while True:
        tmp = final.with_name(_tmp_name(final))
        tmp.mkdir()
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)


def build_lock(final: Path) -> contextlib.AbstractContextManager[bool]:
    """The lock of one salted folder's build (`.<salt>.lock`): concurrent builders of a salt
    take turns. True when another builder held it first (look again whether `final` is
    complete now)."""
    return exclusive_lock(final.with_name(f".{final.name}.lock"))


def publish_salted(
    final: Path, manifest: SaltedManifest, build: Callable[[Path], Mapping[str, Any]]
) -> dict[str, Any]:
    """Build the salted folder `final` atomically with `build(tmp)`, whose returned summary
    joins `manifest`, written last; return the summary."""
    written = manifest.to_json()
    with atomic_dir(final, written) as tmp:
        summary = dict(build(tmp))
        written.update(manifest.with_summary(summary).to_json())
    return summary


@contextlib.contextmanager
def atomic_dir(final: Path, manifest: Mapping[str, Any]) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to fill; on success write the manifest and rename.

    On any exception the temporary folder is removed, so `final` never exists half-written;
    a SIGKILLed build leaves its folder behind, unlocked, and the next build of the asset
    sweeps it.
    If another run completed `final` meanwhile, its folder wins and ours is discarded: both
    have the same salt, so both hold the same result.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_builds(final.parent)
    tmp, lock_fd = _locked_tmp_dir(final)
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
        os.close(lock_fd)
