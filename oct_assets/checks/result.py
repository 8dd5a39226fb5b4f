"""The one shape every check's result takes: passed when nothing was found, else the findings
named in the description and listed in the metadata."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity

from oct_assets.assets.metadata import listing
from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.paths import images_dir
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import read_manifest

NAMED = 3  # findings named in the description; the metadata lists more


def check_result(
    findings: Sequence[str],
    *,
    listed_as: str | None = None,
    title: str = "",
    metadata: dict[str, Any] | None = None,
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
) -> AssetCheckResult:
    """A check's result: it passes when `findings` is empty; the description names the first
    few, and `metadata[listed_as]` lists them (under `title`) when `listed_as` is given."""
    meta = dict(metadata or {})
    if findings and listed_as:
        meta[listed_as] = listing(title, findings)
    described = "; ".join(findings[:NAMED])
    if len(findings) > NAMED:
        described += f"; and {len(findings) - NAMED} more"
    return AssetCheckResult(
        passed=not findings, severity=severity, metadata=meta, description=described or None
    )


def manifest_of(artifact: Artifact) -> SaltedManifest:
    """The manifest of the checked asset's salted folder (config, upstream salts, summary)."""
    return read_manifest(artifact.path)


def image_root() -> Path:
    """The image root the checks read: this run's, as for `raw_oct_images` itself. (The root in
    a `raw_oct_images` manifest is where it was first built, maybe on another machine.)"""
    return images_dir()
