"""paramiko SFTP internals tuned for throughput, and sha256 helpers shared by session and transfers.

This module subclasses paramiko internals (`BufferedPipe` and `SFTPFile`'s prefetch machinery);
`pyproject.toml` bounds the paramiko version because of that. Nothing here opens a connection.
"""

from __future__ import annotations

import re

import paramiko
from paramiko.buffered_pipe import BufferedPipe

from oct_assets.cluster.errors import ClusterCommandError, RemoteFileNotFoundError
from oct_assets.cluster.types import CommandResult, RemoteStat

CHUNK_BYTES = 1 << 20
# Downloads: receive window of the SFTP channel, bytes of read requests kept in flight, and the
# size of one read request. Memory stays bounded by the window; the window must stay well above
# the in-flight bytes, or paramiko stalls waiting for window adjustments. 128 KiB requests mean
# 4x fewer responses for Python to parse than paramiko's 32 KiB (~1.15x faster on loopback).
SFTP_WINDOW_BYTES = 32 << 20
SFTP_IN_FLIGHT_BYTES = 8 << 20
SFTP_READ_BYTES = 128 << 10
_SHA256_LINE = re.compile(r"^\\?([0-9a-f]{64}) [ *](.*)$")


class _FastPipe(BufferedPipe):
    """paramiko's channel buffer with O(1) reads from the front.

    The stock buffer is an `array` whose `del buf[:n]` moves everything behind it, so the many
    small reads of the SFTP client become quadratic in the window size; `bytearray` deletes from
    the front in constant time. This lifted SFTP downloads from ~55 to ~140 MB/s on loopback.
    """

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer += data

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        return bytes(self._buffer[:limit])


class PrefetchingFile(paramiko.SFTPFile):
    """SFTPFile whose bounded prefetch does not give up when the reader catches up.

    With `max_concurrent_requests`, paramiko marks the prefetch done whenever no request is in
    flight, even if its thread has more to send; a fast reader then drops to one blocking round
    trip per 32 KiB while the remaining responses pile up unread in memory (paramiko PR #2519).
    Here "done" additionally requires that every request has been sent.
    """

    _sending = False

    def read_first_block(self, size: int) -> bytes:
        """Read up to `size` bytes with one request and adopt the answer's length as block size.

        Servers cap a read (OpenSSH 8.x at 64 KiB, 9.x at 255 KiB); prefetching blocks larger
        than the cap leaves gaps that make paramiko fall back to one round trip per block. One
        block is also what `read(MAX_REQUEST_SIZE)` returns, so no bytes objects get concatenated.
        """
        self.MAX_REQUEST_SIZE = size
        data = self._read(size)
        if data and len(data) < size:
            self.MAX_REQUEST_SIZE = len(data)
        self._realpos += len(data)
        self._pos = self._realpos
        return data

    def _start_prefetch(self, chunks, max_concurrent_requests=None):
        self._sending = True
        super()._start_prefetch(chunks, max_concurrent_requests)

    def _prefetch_thread(self, chunks, max_concurrent_requests):
        try:
            super()._prefetch_thread(chunks, max_concurrent_requests)
        finally:
            with self._prefetch_lock:
                self._sending = False
                self._prefetch_done = not self._prefetch_extents

    def _async_response(self, t, msg, num):
        super()._async_response(t, msg, num)
        with self._prefetch_lock:
            if self._sending:
                self._prefetch_done = False


def parse_sha256sum(output: str) -> dict[str, str]:
    """Map path -> digest from `sha256sum` output, undoing its escaping of odd file names."""
    digests: dict[str, str] = {}
    for line in output.splitlines():
        match = _SHA256_LINE.match(line)
        if not match:
            continue
        name = match.group(2)
        if line.startswith("\\"):
            name = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), name)
        digests[name] = match.group(1)
    return digests


def open_sftp(transport: paramiko.Transport) -> paramiko.SFTPClient:
    """An SFTP client on a channel with a large window and a buffer with O(1) reads."""
    channel = transport.open_session(window_size=SFTP_WINDOW_BYTES)
    channel.in_buffer = _FastPipe()
    channel.invoke_subsystem("sftp")
    return paramiko.SFTPClient(channel)


def sftp_stat(sftp: paramiko.SFTPClient, host: str, path: str) -> RemoteStat:
    try:
        attrs = sftp.stat(path)
    except FileNotFoundError:
        raise RemoteFileNotFoundError(f"remote path {host}:{path} does not exist") from None
    return RemoteStat(path, attrs.st_size or 0, float(attrs.st_mtime or 0), attrs.st_mode or 0)


def sha256_from_result(host: str, result: CommandResult, path: str) -> str:
    """The digest of `path` from a `sha256sum` command's result, or the error it reported."""
    digests = parse_sha256sum(result.stdout)
    if not result.ok or path not in digests:
        if "No such file" in result.stderr:
            raise RemoteFileNotFoundError(f"remote path {host}:{path} does not exist")
        raise ClusterCommandError(
            f"sha256sum of {host}:{path} failed: {result.stderr.strip()}", result
        )
    return digests[path]
