"""Atomic file writes: a path either does not exist or holds complete content."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from oct_assets.ml.errors import DamagedFileError


def write_bytes(path: Path, data: bytes) -> None:
    """Write a unique temp sibling, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    """A JSON file this project wrote, or a `DamagedFileError` naming it (a bare JSONDecodeError
    says neither which file nor what to do)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DamagedFileError(f"{path} is damaged (not UTF-8 text: {exc})") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DamagedFileError(f"{path} is damaged (not JSON: {exc})") from exc
