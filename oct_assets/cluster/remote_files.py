"""Reading remote files through an `SSHSession`: stat, sha256, digests of several files in one
command, and the tail or the new bytes of a growing log. A mixin of `SSHSession`."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from oct_assets.cluster.errors import ClusterCommandError, RemoteFileNotFoundError
from oct_assets.cluster.sftp import CHUNK_BYTES, parse_sha256sum, sftp_stat, sha256_from_result
from oct_assets.cluster.types import RemoteFileDigest, RemoteStat

if TYPE_CHECKING:
    import paramiko

    from oct_assets.cluster.types import CommandResult, SSHSettings

T = TypeVar("T")


class RemoteFiles:
    """File reads, mixed into `SSHSession`: they go through its `run`, its one retry layer
    (`retrying`), its `sftp` client and its one rule for remote paths (`resolve`), declared
    here for readers and type checkers, defined there."""

    settings: SSHSettings
    run: Callable[..., CommandResult]
    retrying: Callable[[str, Callable[[], T]], T]
    sftp: Callable[[], paramiko.SFTPClient]
    resolve: Callable[[str], str]

    def stat(self, path: str) -> RemoteStat:
        target = self.resolve(path)
        return self.retrying(
            f"stat {target}", lambda: sftp_stat(self.sftp(), self.settings.host, target)
        )

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except RemoteFileNotFoundError:
            return False
        return True

    def sha256(self, path: str) -> str:
        target = self.resolve(path)
        result = self.run(f"sha256sum -- {shlex.quote(target)}")
        return sha256_from_result(self.settings.host, result, target)

    def file_digests(
        self, folder: str, names: Sequence[str], *, timeout: float | None = None
    ) -> dict[str, RemoteFileDigest]:
        """Size, mtime and sha256 of files in one remote folder, with one remote command.

        A missing folder or file raises `RemoteFileNotFoundError` naming it (found with SFTP
        stats, on that failure path only).
        """
        target = self.resolve(folder)
        quoted = " ".join(shlex.quote(name) for name in names)
        result = self.run(
            f"cd -- {shlex.quote(target)} && stat -L -c '%s %Y' -- {quoted}"
            f" && sha256sum -- {quoted}",
            timeout=timeout,
        )
        lines = result.stdout.splitlines()
        digests = parse_sha256sum("\n".join(lines[len(names) :]))
        if not result.ok or any(name not in digests for name in names):
            for path in (target, *(posixpath.join(target, name) for name in names)):
                self.stat(path)  # raises, naming the first path that is missing
            raise ClusterCommandError(
                f"reading {self.settings.host}:{target} failed: {result.stderr.strip()[-500:]}",
                result,
            )
        found = {}
        for name, line in zip(names, lines, strict=False):
            size, mtime = line.split()
            path = posixpath.join(target, name)
            found[name] = RemoteFileDigest(path, int(size), float(mtime), digests[name])
        return found

    def read_tail(self, path: str, max_bytes: int = 8192) -> str:
        """Last `max_bytes` of a remote text file, starting at a line boundary when cut."""
        target = self.resolve(path)

        def op() -> str:
            sftp = self.sftp()
            size = sftp_stat(sftp, self.settings.host, target).size
            start = max(0, size - max_bytes)
            with sftp.open(target, "rb") as f:
                f.seek(start)
                data = f.read(size - start)
            if start > 0 and b"\n" in data:
                data = data.split(b"\n", 1)[1]
            return data.decode(errors="replace")

        return self.retrying(f"read tail of {target}", op)

    def read_from(self, path: str, offset: int, max_bytes: int = CHUNK_BYTES) -> tuple[bytes, int]:
        """Bytes appended since `offset` and the new offset, for following a growing log.

        A missing file reads as empty (the job has not started writing yet); a file shorter
        than `offset` was truncated, so reading restarts at 0.
        """
        target = self.resolve(path)

        def op() -> tuple[bytes, int]:
            sftp = self.sftp()
            try:
                size = sftp_stat(sftp, self.settings.host, target).size
            except RemoteFileNotFoundError:
                return b"", offset
            start = 0 if size < offset else offset
            if size == start:
                return b"", start
            with sftp.open(target, "rb") as f:
                f.seek(start)
                data = f.read(min(size - start, max_bytes))
            return data, start + len(data)

        return self.retrying(f"read {target}", op)
