"""Authentication and host keys of the SSH session: private keys, verified host keys (unknown
ones refused or, opted in, recorded), and a transport that prefers AES-GCM."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import paramiko

from oct_assets.cluster.errors import ClusterAuthError, ClusterConfigError, ClusterHostKeyError
from oct_assets.cluster.types import SSHSettings

logger = logging.getLogger(__name__)

# AES-GCM does cipher and MAC in one OpenSSL call; paramiko's default (CTR + HMAC) costs ~30 %.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


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


class HostKeyPolicy(paramiko.RejectPolicy):
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


def transport_factory(sock: socket.socket, disabled_algorithms=None) -> paramiko.Transport:
    transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
    options = transport.get_security_options()
    available = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) + tuple(
        c for c in available if c not in PREFERRED_CIPHERS
    )
    return transport
