"""SSH connection of the cluster resource: verified host keys, authentication, retries, commands.

Nothing here knows about Dagster or Slurm. `SSHSession` holds one paramiko connection, opens it
on first use, reopens it when it drops, and never retries authentication or host-key failures.
File transfers live in `transfer.py`, which imports this module (never the reverse). There is one
retry layer: the outermost `retrying` call owns the attempts, and operations nested in it (the
commands a transfer runs) run once and let a dropped connection reach it. Loading this module
loads paramiko, so the resource imports it only when a session is first needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import paramiko

from oct_assets.cluster.errors import (
    ClusterAuthError,
    ClusterCommandError,
    ClusterCommandTimeout,
    ClusterConfigError,
    ClusterConnectionError,
    ClusterError,
    ClusterHostKeyError,
    RemoteFileNotFoundError,
)
from oct_assets.cluster.sftp import (
    CHUNK_BYTES,
    open_sftp,
    parse_sha256sum,
    sftp_stat,
    sha256_from_result,
)
from oct_assets.cluster.types import CommandResult, RemoteFileDigest, RemoteStat, SSHSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# AES-GCM does cipher and MAC in one OpenSSL call; paramiko's default (CTR + HMAC) costs ~30 %.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
MAX_BACKOFF_S = 30.0


def load_private_key(path: Path, passphrase: str | None, passphrase_source: str) -> paramiko.PKey:
    """Load an ed25519/RSA/ECDSA key, asking for the passphrase only if the key is encrypted."""
    if not path.is_file():
        raise ClusterConfigError(f"SSH key file {path} does not exist")
    try:
        return paramiko.PKey.from_path(path)
    except TypeError:  # cryptography: the key is encrypted and no passphrase was given
        if passphrase is None:
            raise ClusterAuthError(
                f"SSH key file {path} is encrypted; set {passphrase_source} to its passphrase"
            ) from None
    except (ValueError, paramiko.SSHException) as exc:
        raise ClusterConfigError(f"cannot read SSH private key {path}: {exc}") from None
    try:
        return paramiko.PKey.from_path(path, password=passphrase.encode())
    except (TypeError, ValueError, paramiko.SSHException):
        raise ClusterAuthError(
            f"cannot decrypt SSH key file {path} with the passphrase from {passphrase_source}"
        ) from None


class _HostKeyPolicy(paramiko.RejectPolicy):
    """Reject unknown host keys with their fingerprint, or record them when TOFU is opted in."""

    def __init__(self, settings: SSHSettings) -> None:
        self._settings = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        known_hosts = self._settings.known_hosts
        if not self._settings.trust_on_first_use:
            raise ClusterHostKeyError(
                f"host key of {self._settings.host}:{self._settings.port} is not in {known_hosts}:"
                f" the server offered {key.get_name()} {key.fingerprint}. Compare it with the"
                " fingerprint your admins publish, then add the host with"
                f" `ssh-keyscan -p {self._settings.port} {self._settings.host} >> {known_hosts}`"
                " (or opt in to trust_on_first_use)."
            )
        known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        logger.warning(
            "trust on first use: recorded %s host key %s for %s:%s in %s",
            key.get_name(),
            key.fingerprint,
            self._settings.host,
            self._settings.port,
            known_hosts,
        )


def _transport_factory(sock: socket.socket, disabled_algorithms=None) -> paramiko.Transport:
    transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
    options = transport.get_security_options()
    available = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) + tuple(
        c for c in available if c not in PREFERRED_CIPHERS
    )
    return transport


class SSHSession:
    """One lazily opened, self-healing SSH/SFTP connection with the resource's operations."""

    def __init__(self, settings: SSHSettings, remote_dir: str = ".") -> None:
        self.settings = settings
        self._remote_dir = remote_dir
        self._remote_root: str | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._retries = settings.retries
        self._depth = 0  # > 0 while inside `retrying`: nested operations do not retry again

    # -- connection -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; closing one that already dropped is not an error."""
        with self._lock:
            for handle in (self._sftp, self._client):
                if handle is not None:
                    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                        handle.close()
            self._sftp = None
            self._client = None

    def _connect(self) -> paramiko.SSHClient:
        s = self.settings
        pkey = (
            load_private_key(s.key_file, s.key_passphrase, s.passphrase_source)
            if s.key_file
            else None
        )
        client = paramiko.SSHClient()
        if s.known_hosts.is_file():
            client.load_host_keys(str(s.known_hosts))
        client.set_missing_host_key_policy(_HostKeyPolicy(s))
        sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(
                s.host,
                port=s.port,
                username=s.username,
                pkey=pkey,
                password=s.password,
                sock=sock,
                timeout=s.connect_timeout_s,
                banner_timeout=s.connect_timeout_s,
                auth_timeout=s.connect_timeout_s,
                channel_timeout=s.connect_timeout_s,
                look_for_keys=False,
                allow_agent=s.allow_agent,
                transport_factory=_transport_factory,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ClusterHostKeyError(
                f"host key of {s.host}:{s.port} changed: the server offered"
                f" {exc.key.get_name()} {exc.key.fingerprint} but {s.known_hosts} has"
                f" {exc.expected_key.get_name()} {exc.expected_key.fingerprint}. Someone may be"
                " intercepting the connection, or the host was reinstalled; confirm with your"
                " admins before replacing the entry."
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise ClusterAuthError(
                f"authentication failed for {s.target} using {s.auth_method} ({type(exc).__name__})"
            ) from None
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(s.keepalive_interval_s)
        logger.info("connected to %s (%s)", s.target, transport.remote_cipher)
        return client

    def _ensure_client(self) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.close()
            self._client = self._connect()
        return self._client

    def sftp(self) -> paramiko.SFTPClient:
        """The session's SFTP client, (re)opened on the current connection when needed."""
        client = self._ensure_client()
        if self._sftp is None or self._sftp.get_channel().closed:
            transport = client.get_transport()
            assert transport is not None
            self._sftp = open_sftp(transport)
        return self._sftp

    def alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def _is_connection_drop(self, exc: BaseException) -> bool:
        if isinstance(exc, ClusterError):
            return False
        if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
            return False
        if isinstance(exc, EOFError | paramiko.SSHException | ConnectionError | TimeoutError):
            return True
        # paramiko reports a dead SFTP channel as a plain OSError("Socket is closed").
        return isinstance(exc, OSError) and not self.alive()

    def retrying(self, what: str, op: Callable[[], T]) -> T:
        """Run `op`, reconnecting with exponential backoff when the connection drops.

        Nested calls (an operation inside another's `op`) run once: the outermost call is the
        only retry layer, so attempts never multiply.
        """
        if self._depth:
            return op()
        retries = self._retries
        attempt = 0
        while True:
            try:
                with self._lock:
                    self._depth += 1
                    try:
                        return op()
                    finally:
                        self._depth -= 1
            except BaseException as exc:
                if not self._is_connection_drop(exc):
                    raise
                self.close()
                if attempt >= retries:
                    raise ClusterConnectionError(
                        f"{what} on {self.settings.host}:{self.settings.port} failed after"
                        f" {attempt + 1} attempt(s): {type(exc).__name__}: {exc}"
                    ) from exc
                delay = min(self.settings.retry_backoff_s * 2**attempt, MAX_BACKOFF_S)
                attempt += 1
                logger.warning(
                    "%s: connection to %s:%s dropped (%s: %s); retry %d/%d in %.1fs",
                    what,
                    self.settings.host,
                    self.settings.port,
                    type(exc).__name__,
                    exc,
                    attempt,
                    retries,
                    delay,
                )
                time.sleep(delay)

    def connect(self) -> None:
        """Open the connection now (with retries) so that setup errors surface early."""
        self.retrying("connect", self._ensure_client)

    @contextlib.contextmanager
    def single_attempt(self) -> Iterator[None]:
        """Within the block every operation tries once: no reconnect, no backoff.

        For pollers such as sensors, whose next tick is the retry and whose time per tick is
        bounded: an unreachable host then costs one connect timeout, not `retries + 1` of them
        plus the backoff.
        """
        previous, self._retries = self._retries, 0
        try:
            yield
        finally:
            self._retries = previous

    # -- paths ------------------------------------------------------------------------------

    def resolve(self, path: str) -> str:
        """Absolute remote path; relative paths live under the remote working folder."""
        if posixpath.isabs(path):
            return posixpath.normpath(path)
        return posixpath.normpath(posixpath.join(self.remote_root(), path))

    def remote_root(self) -> str:
        if self._remote_root is None:
            root = self._remote_dir
            if not posixpath.isabs(root):
                home = self.retrying("resolve home", lambda: self.sftp().normalize("."))
                root = posixpath.join(home, root.removeprefix("~").lstrip("/"))
            self._remote_root = posixpath.normpath(root)
        return self._remote_root

    # -- commands ---------------------------------------------------------------------------

    def start(self, command: str) -> paramiko.Channel:
        transport = self._ensure_client().get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=self.settings.connect_timeout_s)
        logger.debug("%s$ %s", self.settings.host, command)
        channel.exec_command(command)
        return channel

    def finish(
        self, channel: paramiko.Channel, command: str, timeout: float | None
    ) -> CommandResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        try:
            while True:
                while channel.recv_ready():
                    out += channel.recv(CHUNK_BYTES)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(CHUNK_BYTES)
                if channel.exit_status_ready():
                    break
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    raise ClusterCommandTimeout(
                        f"`{command}` on {self.settings.host} ran longer than {timeout}s"
                    )
                select.select([channel], [], [], min(wait, 1.0))
            if not channel.status_event.is_set() and not self.alive():
                raise EOFError(f"connection dropped while `{command}` was running")
            # exit-status comes after EOF, so the rest of the output is already buffered.
            while chunk := channel.recv(CHUNK_BYTES):
                out += chunk
            while chunk := channel.recv_stderr(CHUNK_BYTES):
                err += chunk
            return CommandResult(
                command=command,
                exit_code=channel.recv_exit_status(),
                stdout=out.decode(errors="replace"),
                stderr=err.decode(errors="replace"),
            )
        finally:
            channel.close()

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        retry: bool = True,
    ) -> CommandResult:
        """Run a shell command; `retry=False` for commands that must not run twice (sbatch).

        `timeout=None` uses the settings' `command_timeout_s`.
        """
        if timeout is None:
            timeout = self.settings.command_timeout_s

        def op() -> CommandResult:
            return self.finish(self.start(command), command, timeout)

        if retry:
            result = self.retrying(f"`{command}`", op)
        else:
            self.connect()
            try:
                with self._lock:
                    result = op()
            except BaseException as exc:
                if not self._is_connection_drop(exc):
                    raise
                self.close()
                raise ClusterConnectionError(
                    f"connection to {self.settings.host}:{self.settings.port} dropped while"
                    f" running `{command}`; it may or may not have run"
                ) from exc
        if check and not result.ok:
            raise ClusterCommandError(
                f"`{command}` on {self.settings.host} exited {result.exit_code}:"
                f" {result.stderr.strip()[-2000:]}",
                result,
            )
        return result

    # -- files ------------------------------------------------------------------------------

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
