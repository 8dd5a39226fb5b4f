"""Verified SFTP transfers over an `SSHSession` (this module imports ssh, never the reverse).

Every transfer writes to a hidden temporary name, verifies the sha256 of the bytes sent against
the other side, and only then renames into place, so a path that exists is complete. Each
function is one retried operation (`SSHSession.retrying`); the commands it runs inside do not
retry on their own, so a dropped connection costs one attempt of the whole operation.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shlex
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import paramiko

from oct_assets.cluster.errors import ClusterError, TransferVerificationError
from oct_assets.cluster.sftp import (
    CHUNK_BYTES,
    SFTP_IN_FLIGHT_BYTES,
    SFTP_READ_BYTES,
    PrefetchingFile,
    parse_sha256sum,
    sftp_stat,
    sha256_from_result,
)
from oct_assets.cluster.ssh import SSHSession
from oct_assets.cluster.types import DirUploadResult, Progress, TransferResult
from oct_assets.contracts.files import fsync_path, sha256_file

logger = logging.getLogger(__name__)


def _tmp_name(name: str) -> str:
    """Hidden, obviously-partial sibling name: a crash never leaves a file that looks complete."""
    return f".{name}.part-{uuid.uuid4().hex[:12]}"


def _cleanup_remote(session: SSHSession, paths: list[str]) -> None:
    """Remove temp files a dropped attempt left behind (best effort, on a fresh connection)."""
    sftp = session.sftp()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(path)
    paths.clear()


def _send(
    sftp: paramiko.SFTPClient, local: Path, remote: str, progress: Progress | None
) -> tuple[str, int]:
    """Stream `local` into `remote` with pipelined writes; return (sha256 sent, size)."""
    digest, sent = hashlib.sha256(), 0
    total = local.stat().st_size
    with open(local, "rb") as src, sftp.open(remote, "wb") as dst:
        dst.set_pipelined(True)
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            dst.write(chunk)
            sent += len(chunk)
            if progress:
                progress(sent, total)
    return digest.hexdigest(), sent


def _verify_remote(session: SSHSession, pairs: Sequence[tuple[str, str]], directory: str) -> None:
    """Check remote files against expected digests with one `sha256sum` per batch."""
    for batch in _batches(pairs, max_chars=64_000):
        names = " ".join(shlex.quote(p) for p, _ in batch)
        result = session.run(f"cd -- {shlex.quote(directory)} && sha256sum -- {names}")
        remote = parse_sha256sum(result.stdout)
        for path, expected in batch:
            if remote.get(path) != expected:
                raise TransferVerificationError(
                    f"sha256 of {session.settings.host}:{posixpath.join(directory, path)} is"
                    f" {remote.get(path) or 'unreadable'}, sent {expected}"
                )


def write_bytes(session: SSHSession, data: bytes, remote: str) -> str:
    """Atomically write a small remote file (scripts, configs); returns its absolute path."""
    target = session.resolve(remote)
    parent, name = posixpath.split(target)

    def op() -> str:
        session.run(f"mkdir -p -- {shlex.quote(parent)}", check=True)
        sftp = session.sftp()
        tmp = posixpath.join(parent, _tmp_name(name))
        try:
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            sftp.posix_rename(tmp, target)
        except BaseException:
            if session.alive():
                sftp.remove(tmp)
            raise
        return target

    return session.retrying(f"write {target}", op)


def download(
    session: SSHSession, remote: str, local: Path, *, progress: Progress | None = None
) -> TransferResult:
    """Download to a hidden local temp file, verify against remote `sha256sum`, rename.

    The remote checksum runs concurrently with the transfer, so verification costs little
    wall time; the local digest is computed on the streamed bytes, not by re-reading.
    """
    source = session.resolve(remote)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)

    def op() -> TransferResult:
        started = time.monotonic()
        sftp = session.sftp()
        info = sftp_stat(sftp, session.settings.host, source)
        if info.is_dir:
            raise ClusterError(f"remote path {session.settings.host}:{source} is a directory")
        checksum = session.start(f"sha256sum -- {shlex.quote(source)}")
        tmp = local.with_name(_tmp_name(local.name))
        try:
            digest, size = hashlib.sha256(), 0
            with sftp.open(source, "rb") as src, open(tmp, "wb") as dst:
                src.__class__ = PrefetchingFile
                # An empty file would answer the first read with an EOF status.
                chunk = src.read_first_block(SFTP_READ_BYTES) if info.size else b""
                block = src.MAX_REQUEST_SIZE
                src.prefetch(info.size, max_concurrent_requests=SFTP_IN_FLIGHT_BYTES // block)
                while chunk:
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(size, info.size)
                    chunk = src.read(block)
                dst.flush()
                os.fsync(dst.fileno())
            expected = sha256_from_result(
                session.settings.host, session.finish(checksum, f"sha256sum {source}", None), source
            )
            if digest.hexdigest() != expected:
                raise TransferVerificationError(
                    f"downloaded {session.settings.host}:{source} hashes to {digest.hexdigest()},"
                    f" remote sha256sum says {expected} (did the file change meanwhile?)"
                )
            os.replace(tmp, local)
            fsync_path(local.parent)
        finally:
            # Unlink first: closing the checksum channel raises EOFError on a dropped connection.
            tmp.unlink(missing_ok=True)
            checksum.close()
        return TransferResult(source, str(local), size, expected, time.monotonic() - started)

    result = session.retrying(f"download of {source}", op)
    logger.info(
        "downloaded %s:%s -> %s (%d bytes, %.0f MB/s)",
        session.settings.host,
        source,
        local,
        result.size,
        result.size / max(result.seconds, 1e-9) / 1e6,
    )
    return result


def remote_tree_sha256(session: SSHSession, remote_dir: str) -> dict[str, str]:
    """sha256 of every file under a remote folder, keyed by relative path, in one command."""
    target = session.resolve(remote_dir)
    quoted = shlex.quote(target)
    result = session.run(
        f"if [ -d {quoted} ]; then cd -- {quoted} &&"
        " find . -type f ! -name '.*.part-*' -exec sha256sum -- {} +; fi"
    )
    return {name.removeprefix("./"): d for name, d in parse_sha256sum(result.stdout).items()}


def upload_dir(session: SSHSession, local_dir: Path, remote_dir: str) -> DirUploadResult:
    """Mirror a local folder's files into a remote folder, skipping files that already match.

    Round trips stay per batch, not per file, where the protocol allows: one `sha256sum`
    listing before, one `mkdir -p`, one verification and one `mv` batch after the writes.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"local folder {local_dir} does not exist")
    target = session.resolve(remote_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    local = {p.relative_to(local_dir).as_posix(): sha256_file(p) for p in files}
    stale: list[str] = []

    def op() -> DirUploadResult:
        _cleanup_remote(session, stale)
        remote = remote_tree_sha256(session, target)
        todo = [rel for rel in local if remote.get(rel) != local[rel]]
        skipped = tuple(rel for rel in local if rel not in todo)
        if todo:
            dirs = sorted({posixpath.dirname(posixpath.join(target, rel)) for rel in todo})
            session.run("mkdir -p -- " + " ".join(shlex.quote(d) for d in dirs), check=True)
            sftp = session.sftp()
            temps: dict[str, str] = {}
            for rel in todo:
                folder, name = posixpath.split(rel)
                temps[rel] = posixpath.join(folder, _tmp_name(name))
                stale.append(posixpath.join(target, temps[rel]))
                digest, _ = _send(sftp, local_dir / rel, stale[-1], None)
                if digest != local[rel]:
                    raise TransferVerificationError(f"{local_dir / rel} changed during upload")
            try:
                _verify_remote(session, [(temps[rel], local[rel]) for rel in todo], target)
            except TransferVerificationError:
                _cleanup_remote(session, stale)
                raise
            moves = [(temps[rel], rel) for rel in todo]
            for batch in _batches(moves, max_chars=64_000):
                script = " && ".join(
                    f"mv -f -T -- {shlex.quote(a)} {shlex.quote(b)}" for a, b in batch
                )
                session.run(f"cd -- {shlex.quote(target)} && {script}", check=True)
            stale.clear()
        return DirUploadResult(target, tuple(todo), skipped)

    result = session.retrying(f"upload of {local_dir} to {target}", op)
    logger.info(
        "uploaded %s -> %s:%s (%d sent, %d unchanged)",
        local_dir,
        session.settings.host,
        target,
        len(result.uploaded),
        len(result.skipped),
    )
    return result


def _batches(items: Sequence[tuple[str, str]], max_chars: int) -> Iterator[list[tuple[str, str]]]:
    """Split items so that each remote command line stays far below ARG_MAX."""
    batch: list[tuple[str, str]] = []
    size = 0
    for item in items:
        cost = len(item[0]) + len(item[1]) + 32
        if batch and size + cost > max_chars:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        yield batch
