"""Salts and salted folders: the one place that names an asset's output.

An output lives at `<data_dir>/<asset>/<salt>/`. The salt hashes the asset key, its code
version, its config and the salts of its upstream outputs, so a change anywhere upstream moves
every downstream path. `publish.py` builds such a folder atomically: one that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oct_assets.contracts.formats import MANIFEST_JSON
from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.paths import data_dir

SALT_LENGTH = 16


def compute_salt(
    asset: str, code_version: str, config: Mapping[str, Any], upstream: Mapping[str, str]
) -> str:
    """Hash of everything that determines an asset's output; equal salts mean equal results."""
    payload = json.dumps(
        {"asset": asset, "code_version": code_version, "config": config, "upstream": upstream},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:SALT_LENGTH]


def salted_dir(asset: str, salt: str, root: Path | None = None) -> Path:
    """Where the output of `asset` with `salt` lives."""
    return (root or data_dir()) / asset / salt


def is_complete(folder: Path) -> bool:
    """A salted folder is complete when it exists with its manifest (both appear at once)."""
    return (folder / MANIFEST_JSON).is_file()


def read_manifest(folder: Path) -> SaltedManifest:
    """The manifest of a complete salted folder; a `DamagedFileError` names a damaged one."""
    return SaltedManifest.read(folder)
