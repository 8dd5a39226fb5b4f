"""A seeded, stratified, patient-disjoint sample of a scanned image tree, and its validation."""

from __future__ import annotations

import fcntl
import random
import shutil
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oct_assets.contracts.errors import SampleError
from oct_assets.contracts.formats import CLASSES, write_images_csv
from oct_assets.dataset.scan import ImageRecord
from oct_assets.dataset.validity import decode_problem


def draw_sample(
    records: Iterable[ImageRecord],
    train_per_class: int | None,
    test_per_class: int | None,
    seed: int,
) -> list[ImageRecord]:
    """Pick `test_per_class` test and `train_per_class` train images of every class.

    Test images are drawn first; train images of any patient drawn for test are then excluded,
    so no patient is in both splits. `None` means every eligible image. Candidates are sorted
    by path before the seeded draw, so the sample never depends on directory order.
    """
    by_split: dict[str, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(records, key=lambda r: r.path):
        by_split[r.split][r.label].append(r)
    rng = random.Random(seed)
    test = _draw(by_split["test"], test_per_class, rng, "test_per_class", "test")
    test_patients = {r.patient for r in test}
    eligible = {
        label: [r for r in rs if r.patient not in test_patients]
        for label, rs in by_split["train"].items()
    }
    train = _draw(eligible, train_per_class, rng, "train_per_class", "train")
    return train + test


def _draw(
    by_label: dict[str, list[ImageRecord]],
    per_class: int | None,
    rng: random.Random,
    setting: str,
    split: str,
) -> list[ImageRecord]:
    out: list[ImageRecord] = []
    for label in CLASSES:
        candidates = by_label.get(label, [])
        if per_class is None:
            chosen = list(candidates)
        elif per_class > len(candidates):
            raise SampleError(
                f"{setting}={per_class} but class {label} has only {len(candidates)} eligible "
                f"{split} images (train images of test patients are excluded); lower {setting} "
                "or set it to null to take all"
            )
        else:
            chosen = rng.sample(candidates, per_class)
        if not chosen:
            raise SampleError(f"class {label} has no eligible {split} images")
        out.extend(sorted(chosen, key=lambda r: r.path))
    return out


def check_images(root: Path, records: list[ImageRecord], workers: int = 8) -> None:
    """Decode every image at reduced scale; raise one SampleError naming every bad file.

    JPEG draft mode decodes at 1/8 scale, so this costs a fraction of a full decode, yet it
    reads the whole stream and catches zero-byte, truncated and non-image files.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = pool.map(lambda r: decode_problem(root / r.path), records)
        problems = [
            f"{root / r.path}: {why}" for r, why in zip(records, reasons, strict=True) if why
        ]
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SampleError(
            f"{len(problems)} unusable image(s) under {root}; remove or replace them:\n"
            f"{shown}{more}"
        )


def copy_sample(root: Path, records: list[ImageRecord], dest: Path) -> str:
    """Copy each image into `dest` and write `images.csv`; return "reflink" or "copy".

    Never a hard link: a source rewritten in place (same inode, as editors and sync tools do)
    would change the completed sample. A reflink (copy-on-write clone, where the file system
    has them) is safe: writing either file unshares its blocks.
    """
    method = "reflink"
    for r in records:
        target = dest / r.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _reflink(root / r.path, target):
            shutil.copyfile(root / r.path, target)
            method = "copy"
        shutil.copystat(root / r.path, target)
    write_images_csv(
        dest,
        (
            {"file": r.path, "split": r.split, "label": r.label, "patient": r.patient}
            for r in records
        ),
    )
    return method


FICLONE = 0x40049409  # Linux ioctl: clone a whole file (btrfs, XFS, bcachefs, ...)


def _reflink(source: Path, target: Path) -> bool:
    """Clone `source` into a new `target` copy-on-write; False (and no target) if unsupported."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return True
        except OSError:
            pass
    target.unlink()
    return False
