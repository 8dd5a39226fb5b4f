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
import posixpath
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import paramiko

from oct_assets.cluster.auth import HostKeyPolicy, load_private_key, transport_factory
from oct_assets.cluster.errors import (
    ClusterAuthError,
    ClusterCommandError,
    ClusterCommandTimeout,
    ClusterConnectionError,
    ClusterError,
    ClusterHostKeyError,
)
from oct_assets.cluster.remote_files import RemoteFiles
from oct_assets.cluster.sftp import CHUNK_BYTES, open_sftp
from oct_assets.cluster.types import CommandResult, SSHSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF_S = 30.0


class SSHSession(RemoteFiles):
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
        client.set_missing_host_key_policy(HostKeyPolicy(s))
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
                transport_factory=transport_factory,
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
