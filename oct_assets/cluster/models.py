"""Model folders on the cluster (`model.pt` + `model.json`, `contracts.formats`): their hash,
which fetch mode salts on and the sensor compares, and their verified download.

Free of paramiko at import (the sensor loads with the definitions); the download imports the
transfer functions, and with them paramiko, when it runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from oct_assets.contracts.formats import MODEL_FILES

if TYPE_CHECKING:
    from oct_assets.cluster.ssh import SSHSession


def model_content_hash(digests: dict[str, str]) -> str:
    """sha256 over the model files' sha256s: what fetch salts on and the sensor compares."""
    return hashlib.sha256("".join(digests[name] for name in MODEL_FILES).encode()).hexdigest()


@dataclass(frozen=True)
class RemoteModel:
    """A model folder on the cluster (absolute path) and the sha256 of each of its files."""

    path: str
    sha256: dict[str, str]

    @property
    def content(self) -> str:
        return model_content_hash(self.sha256)


def locate(session: SSHSession, path: str) -> RemoteModel:
    """The model at `path` (relative: under the remote folder), hashed on the cluster; a missing
    file raises `RemoteFileNotFoundError` naming it."""
    remote = session.resolve(path)
    return RemoteModel(remote, {name: session.sha256(f"{remote}/{name}") for name in MODEL_FILES})


def download_model(
    session: SSHSession,
    remote: str,
    dest: Path,
    *,
    expected: dict[str, str] | None,
    log: Callable[[str], None],
) -> None:
    """Download the model files into `dest`, each sha256-verified end to end; with `expected`,
    also refuse files that changed since they were hashed."""
    from oct_assets.cluster import transfer  # paramiko loads with the first download

    for name in MODEL_FILES:
        result = transfer.download(session, f"{remote}/{name}", dest / name)
        if expected is not None and result.sha256 != expected[name]:
            raise RuntimeError(
                f"{remote}/{name} changed during the transfer (sha256 {result.sha256} != "
                f"{expected[name]}); materialise cluster_model again"
            )
        log(f"fetched {remote}/{name} ({result.size} bytes, {result.seconds:.1f}s)")
