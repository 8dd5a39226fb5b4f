"""`raw_oct_images` (the image tree as a tracked input) and `reduced_sample` (what trains)."""

from pathlib import Path
from typing import Any, Literal

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from oct_assets.assets.metadata import SYNTHETIC_WARNING, counts_table, png_markdown
from oct_assets.assets.salted import GROUP, salted_output
from oct_assets.contracts.assets import RAW_OCT_IMAGES
from oct_assets.contracts.files import exclusive_lock
from oct_assets.contracts.formats import CLASSES, SPLITS
from oct_assets.dataset.scan import (
    MANIFEST_CSV,
    ScanResult,
    content_fingerprint,
    read_manifest_csv,
    scan_tree,
    write_manifest_csv,
)
from oct_assets.paths import images_dir, images_dir_is_explicit
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import read_manifest

CONTACT_SHEET = "contact_sheet.png"


def _ensure_images(context: AssetExecutionContext) -> Path:
    """The image root; generates the embedded synthetic set when the default root is absent."""
    root = images_dir()
    if root.exists() or images_dir_is_explicit():
        return root
    from oct_assets.dataset.synthetic import make_synthetic_oct2017

    # Two first runs on an empty data folder: one generates, the other waits and uses it.
    with exclusive_lock(root.with_name(f".{root.name}.lock")) as waited:
        if not root.exists():
            context.log.warning(
                f"{SYNTHETIC_WARNING}: no images at {root}, generating a demo set there"
            )
            make_synthetic_oct2017(root)
        elif waited:
            context.log.info(f"waited for another run to generate the demo set at {root}")
    return root


class RawOctImagesConfig(Config):
    """How the image tree is fingerprinted; the fingerprint, not the root's path, is the salt."""

    fingerprint: Literal["stat", "content"] = Field(
        default="stat",
        description="stat: path, size and mtime of every image (cheap; misses an edit that "
        "keeps size and mtime); content: sha256 of every image's bytes (reads every file)",
    )


@asset(group_name=GROUP, code_version="2")  # 2: the root is metadata, not salt
def raw_oct_images(context: AssetExecutionContext, config: RawOctImagesConfig) -> Output[Artifact]:
    """The OCT2017 image folder as a tracked input: a stat-only manifest and its fingerprint.

    Root: `$OCT_IMAGES_DIR`, else `$OCT_DATA_DIR/OCT2017` (synthetic data is generated there
    when it is absent). The data version changes whenever an image is added, removed or touched
    (or, with `fingerprint: content`, whenever an image's bytes change); the same images at
    another path give the same salt.
    """
    root = _ensure_images(context)
    scan = scan_tree(root)
    fingerprint = (
        content_fingerprint(root, scan.records)
        if config.fingerprint == "content"
        else scan.fingerprint
    )
    context.log.info(f"scanned {len(scan.records)} images under {root}")
    if scan.synthetic:
        context.log.warning(SYNTHETIC_WARNING)
    for rel, reason in scan.ignored[:20]:
        context.log.warning(f"ignored {root / rel}: {reason}")

    def build(tmp: Path) -> dict[str, Any]:
        write_manifest_csv(tmp / MANIFEST_CSV, scan.records)
        return {**summarize_scan(scan), "fingerprint": fingerprint}

    def describe(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
        # The manifest's root is where the first builder scanned; this run read `root`.
        return {**describe_scan(folder, s), "root": MetadataValue.path(str(root))}

    return salted_output(
        context,
        config=config.model_dump(),
        upstream={"images_fingerprint": fingerprint},
        build=build,
        describe=describe,
    )


def summarize_scan(scan: ScanResult) -> dict[str, Any]:
    return {
        "root": str(scan.root),
        "synthetic": scan.synthetic,
        "n_images": len(scan.records),
        "bytes": sum(r.size for r in scan.records),
        "counts": scan.counts(),
        "patients": scan.patients(),
        "ignored": [f"{p}: {why}" for p, why in scan.ignored],
        "fingerprint": scan.fingerprint,
    }


def describe_scan(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "root": MetadataValue.path(s["root"]),
        "synthetic": s["synthetic"],
        "n_images": s["n_images"],
        "bytes": s["bytes"],
        "counts": counts_table(s["counts"]),
        "patients_train": s["patients"]["train"],
        "patients_test": s["patients"]["test"],
        "ignored_files": len(s["ignored"]),
        "fingerprint": s["fingerprint"],
    }
    if s["ignored"]:
        meta["ignored_examples"] = MetadataValue.md(
            "Files left out (name or place does not fit the OCT2017 layout):\n\n"
            + "\n".join(f"- `{line}`" for line in s["ignored"][:50])
        )
    if s["synthetic"]:
        meta["WARNING"] = SYNTHETIC_WARNING
    return meta


class ReducedSampleConfig(Config):
    """How many images of each class to sample; null takes every eligible image."""

    train_per_class: int | None = Field(default=50, ge=1, description="train images per class")
    test_per_class: int | None = Field(default=10, ge=1, description="test images per class")
    seed: int = Field(default=0, ge=0, description="seed of the sampling draw")


@asset(group_name=GROUP, code_version="3")  # 2: contact_sheet.png; 3: copies, not links
def reduced_sample(
    context: AssetExecutionContext, config: ReducedSampleConfig, raw_oct_images: Artifact
) -> Output[Artifact]:
    """A seeded, stratified sample with no patient in both splits, copied into its folder."""
    from oct_assets.dataset.sampling import check_images, copy_sample, draw_sample
    from oct_assets.ml.plots import contact_sheet_png

    cfg = config.model_dump()

    def build(tmp: Path) -> dict[str, Any]:
        scan_summary = read_manifest(raw_oct_images.path).summary
        root = images_dir()  # this run's root: the manifest's may be another machine's path
        records = read_manifest_csv(raw_oct_images.path / MANIFEST_CSV)
        sample = draw_sample(records, config.train_per_class, config.test_per_class, config.seed)
        context.log.info(f"sampled {len(sample)} images; checking that each one decodes")
        check_images(root, sample)
        method = copy_sample(root, sample, tmp)
        context.log.info(f"copied {len(sample)} images into the sample ({method})")
        by_class = {c: [r.path for r in sample if r.label == c] for c in CLASSES}
        (tmp / CONTACT_SHEET).write_bytes(contact_sheet_png(tmp, by_class))
        counts = {s: dict.fromkeys(CLASSES, 0) for s in SPLITS}
        for r in sample:
            counts[r.split][r.label] += 1
        return {
            "n_images": len(sample),
            "counts": counts,
            "patients": {s: len({r.patient for r in sample if r.split == s}) for s in SPLITS},
            "copy_method": method,
            "synthetic": scan_summary["synthetic"],
            "source_root": str(root),
            "classes": list(CLASSES),
        }

    return salted_output(
        context,
        config=cfg,
        upstream={RAW_OCT_IMAGES: raw_oct_images.salt},
        build=build,
        describe=describe_sample,
    )


def describe_sample(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "n_images": s["n_images"],
        "counts": counts_table(s["counts"]),
        "patients_train": s["patients"]["train"],
        "patients_test": s["patients"]["test"],
        "copy_method": s["copy_method"],
        "synthetic": s["synthetic"],
    }
    if (folder / CONTACT_SHEET).is_file():
        meta["contact_sheet"] = png_markdown(folder / CONTACT_SHEET, "sampled images per class")
    if s["synthetic"]:
        meta["WARNING"] = SYNTHETIC_WARNING
    return meta
