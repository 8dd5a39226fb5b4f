"""This project's ML code on the cluster: `oct_assets/ml` and the `contracts` leaf beneath it
(all a node needs to train), uploaded
to a folder named by its content hash, so a job runs the code of the run that submitted it."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from oct_assets.cluster import transfer
from oct_assets.cluster.layout import RemoteLayout
from oct_assets.cluster.ssh import SSHSession

PACKAGE = Path(__file__).resolve().parents[1]  # oct_assets/
SHIPPED_PACKAGES = ("contracts", "ml")


def ml_code_files() -> list[Path]:
    """The files a node imports: the package marker and every module of `oct_assets/ml` and
    `oct_assets/contracts` (the only package `ml` imports; `test_layout.py` keeps it so)."""
    shipped = [sorted((PACKAGE / package).glob("*.py")) for package in SHIPPED_PACKAGES]
    return [PACKAGE / "__init__.py", *(f for files in shipped for f in files)]


def upload_ml_code(session: SSHSession, layout: RemoteLayout) -> str:
    """Upload the ML code (unchanged files skipped) to `code/<digest>`; the folder to put on
    the job's `PYTHONPATH`."""
    files = ml_code_files()
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(PACKAGE).as_posix().encode() + b"\0" + f.read_bytes())
    remote_code = layout.code(digest.hexdigest()[:16])
    with tempfile.TemporaryDirectory() as stage:
        for f in files:
            target = Path(stage, "oct_assets", f.relative_to(PACKAGE))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
        transfer.upload_dir(session, Path(stage), remote_code)
    return remote_code
