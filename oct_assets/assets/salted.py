"""The one code path every asset uses to compute its salt, reuse or build its folder, and report."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, BetaWarning, DataVersion, MetadataValue, Output

from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.store.artifact import Artifact
from oct_assets.store.publish import build_lock, publish_salted
from oct_assets.store.salt import compute_salt, is_complete, read_manifest, salted_dir

# The asset group of every asset of this project (one graph in the UI).
GROUP = "oct"
# build(tmp_folder) fills the folder and returns a JSON-able summary kept in the manifest
# (`SaltedManifest.summary`, e.g. a sample's "classes").
Build = Callable[[Path], dict[str, Any]]
# describe(final_folder, summary) turns the summary into Dagster metadata (tables, pictures).
Describe = Callable[[Path, dict[str, Any]], dict[str, Any]]


def code_version(context: AssetExecutionContext) -> str:
    """The code version stated on the asset's definition (the one place it is written)."""
    version = context.assets_def.code_versions_by_key[context.asset_key]
    if version is None:
        raise ValueError(f"asset {context.asset_key.to_user_string()} has no code_version")
    return version


def asset_salt(
    context: AssetExecutionContext, config: Mapping[str, Any], upstream: Mapping[str, str]
) -> str:
    """The salt of the asset being materialised (for builds that name remote folders by it)."""
    return compute_salt(context.asset_key.path[-1], code_version(context), config, upstream)


def salted_output(
    context: AssetExecutionContext,
    *,
    config: Mapping[str, Any],
    upstream: Mapping[str, str],
    build: Build,
    describe: Describe | None = None,
) -> Output[Artifact]:
    """Return the asset's salted output, building it only when its folder is not complete yet.

    `upstream` maps each input's name to its salt (or, for the image tree, its fingerprint).
    A cache hit still records a materialisation with the same data version.
    """
    asset = context.asset_key.path[-1]
    salt = asset_salt(context, config, upstream)
    folder = salted_dir(asset, salt)
    started = time.perf_counter()
    cache_hit = is_complete(folder)
    if not cache_hit:
        # One builder per salt: a second run waits for the first, then finds its folder.
        with build_lock(folder) as waited:
            if waited:
                context.log.info(f"waited for another builder of {asset} salt {salt}")
            cache_hit = is_complete(folder)
            if not cache_hit:
                summary = _build(context, asset, salt, folder, config, upstream, build)
    if cache_hit:
        context.log.info(f"cache hit: {asset} salt {salt} is complete at {folder}; skipping work")
        summary = read_manifest(folder).summary
    metadata: dict[str, Any] = {
        "salt": salt,
        "path": MetadataValue.path(str(folder)),
        "cache_hit": cache_hit,
        "config": MetadataValue.json(dict(config)),
        "upstream_salts": MetadataValue.json(dict(upstream)),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if describe is not None:
        metadata.update(describe(folder, summary))
    with warnings.catch_warnings():
        # Output(data_version=...) is marked beta; it is the documented way to set one.
        warnings.simplefilter("ignore", BetaWarning)
        return Output(
            Artifact(asset=asset, salt=salt, path=folder),
            data_version=DataVersion(salt),
            metadata=metadata,
        )


def _build(
    context: AssetExecutionContext,
    asset: str,
    salt: str,
    folder: Path,
    config: Mapping[str, Any],
    upstream: Mapping[str, str],
    build: Build,
) -> dict[str, Any]:
    """Build the salted folder atomically; return the asset's summary (also in the manifest)."""
    context.log.info(f"building {asset} salt {salt} into {folder}")
    manifest = SaltedManifest.new(asset, salt, code_version(context), config, upstream)
    return publish_salted(folder, manifest, build)
