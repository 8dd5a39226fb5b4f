"""The value every asset passes downstream: which salted folder holds its output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    """A complete salted output folder; `salt` is also the asset's Dagster data version."""

    asset: str
    salt: str
    path: Path
