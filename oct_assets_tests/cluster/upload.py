"""A verified upload of one file, which only the tests use (the library sends folders:
`transfer.upload_dir`, `staging.stage_folder`), from `transfer`'s own pieces: a hidden temp
name, its sha256 checked on the other side, a rename, all one retried operation."""

from __future__ import annotations

import posixpath
import shlex
import time
from pathlib import Path

from oct_assets.cluster.errors import TransferVerificationError
from oct_assets.cluster.ssh import SSHSession
from oct_assets.cluster.transfer import _cleanup_remote, _send, _tmp_name, _verify_remote
from oct_assets.cluster.types import Progress, TransferResult


def upload(
    session: SSHSession, local: Path, remote: str, *, progress: Progress | None = None
) -> TransferResult:
    """Upload to a hidden temp name, verify its sha256 remotely, then rename into place."""
    local = Path(local)
    if not local.is_file():
        raise FileNotFoundError(f"local file {local} does not exist")
    target = session.resolve(remote)
    parent, name = posixpath.split(target)
    stale: list[str] = []

    def op() -> TransferResult:
        started = time.monotonic()
        _cleanup_remote(session, stale)
        session.run(f"mkdir -p -- {shlex.quote(parent)}", check=True)
        sftp = session.sftp()
        tmp = _tmp_name(name)
        stale.append(posixpath.join(parent, tmp))
        digest, size = _send(sftp, local, posixpath.join(parent, tmp), progress)
        try:
            _verify_remote(session, [(tmp, digest)], parent)
        except TransferVerificationError:
            _cleanup_remote(session, stale)
            raise
        sftp.posix_rename(posixpath.join(parent, tmp), target)
        stale.clear()
        return TransferResult(str(local), target, size, digest, time.monotonic() - started)

    return session.retrying(f"upload of {local} to {target}", op)
