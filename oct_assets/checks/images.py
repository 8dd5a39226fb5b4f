"""Checks of `raw_oct_images`: every image's header and end marker readable (no full decode),
no unknown class folder, names that follow the pattern, classes balanced per split."""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from oct_assets.assets.images import raw_oct_images
from oct_assets.checks.result import check_result, image_root, manifest_of
from oct_assets.contracts.formats import CLASSES, SPLITS, read_csv_rows
from oct_assets.dataset.scan import MANIFEST_CSV
from oct_assets.dataset.validity import header_problem
from oct_assets.store.artifact import Artifact

MIN_CLASS_RATIO = 0.1  # smallest class / largest class per split; Kermany's train split: 0.23


@asset_check(asset=raw_oct_images, name="images_readable")
def images_readable(raw_oct_images: Artifact) -> AssetCheckResult:
    """Every image in the manifest has a readable header and, for JPEG, an end marker."""
    root = image_root()
    paths = [row["path"] for row in read_csv_rows(raw_oct_images.path / MANIFEST_CSV)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = pool.map(lambda rel: header_problem(root / rel), paths)
        bad = [f"{root / rel}: {why}" for rel, why in zip(paths, problems, strict=True) if why]
    return check_result(
        bad,
        listed_as="unreadable_files",
        title="Unreadable or corrupt images:",
        metadata={"images_checked": len(paths), "unreadable": len(bad)},
    )


@asset_check(asset=raw_oct_images, name="class_folders_known")
def class_folders_known(raw_oct_images: Artifact) -> AssetCheckResult:
    """No folder under `train/` or `test/` other than the known classes (checked on disk now:
    the scan already refuses them, so this catches folders added since)."""
    root = image_root()
    unknown = []
    for split in SPLITS:
        with os.scandir(root / split) as entries:
            unknown += [
                str(root / split / e.name)
                for e in entries
                if e.is_dir() and not e.name.startswith(".") and e.name not in CLASSES
            ]
    return check_result(
        sorted(unknown),
        listed_as="unknown_folders",
        title="Unknown class folders:",
        metadata={"known_classes": ", ".join(CLASSES)},
    )


@asset_check(asset=raw_oct_images, name="file_names_follow_pattern")
def file_names_follow_pattern(raw_oct_images: Artifact) -> AssetCheckResult:
    """Every file is `<CLASS>-<patient>-<n>.jpeg` in its class folder (others are left out)."""
    ignored = manifest_of(raw_oct_images).summary.get("ignored", [])
    return check_result(
        ignored,
        listed_as="left_out",
        title="Files left out of the manifest:",
        metadata={"files_left_out": len(ignored)},
        severity=AssetCheckSeverity.WARN,
    )


def class_ratios(counts: dict[str, dict[str, int]]) -> dict[str, float]:
    """Per split, the smallest class count over the largest (1.0 is perfectly balanced)."""
    return {
        split: min(by_class.values()) / max(max(by_class.values()), 1)
        for split, by_class in counts.items()
    }


@asset_check(asset=raw_oct_images, name="class_balance")
def class_balance(raw_oct_images: Artifact) -> AssetCheckResult:
    """Per split, the smallest class has at least `MIN_CLASS_RATIO` of the largest's images."""
    counts = manifest_of(raw_oct_images).summary["counts"]
    ratios = class_ratios(counts)
    metadata: dict[str, Any] = {f"ratio_{s}": round(r, 4) for s, r in ratios.items()}
    metadata["min_ratio"] = MIN_CLASS_RATIO
    metadata["counts"] = MetadataValue.json(counts)
    return check_result(
        [
            f"{s}: smallest class has {r:.1%} of the largest's images"
            for s, r in ratios.items()
            if r < MIN_CLASS_RATIO
        ],
        metadata=metadata,
        severity=AssetCheckSeverity.WARN,
    )


RAW_CHECKS = [images_readable, class_folders_known, file_names_follow_pattern, class_balance]
