"""Scan an OCT2017-layout image tree with `stat` only: the manifest and its fingerprint.

Cheap enough for the full ~84k-image release: no file is opened, let alone decoded. Layout
problems that make the tree unusable raise `ImageTreeError` naming the path; files whose names
do not follow `<CLASS>-<patient>-<n>.jpeg` are left out and reported in `ScanResult.ignored`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

from oct_assets.contracts.formats import CLASSES, SPLITS
from oct_assets.dataset.layout import FILENAME_RE, SYNTHETIC_MARKER

# The image tree's manifest in `raw_oct_images`' folder: one row per image (stat only).
MANIFEST_CSV = "manifest.csv"


class ImageTreeError(ValueError):
    """The image root is unusable; the message names the path and what is wrong."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of the tree; `path` is relative to the root, with `/` separators."""

    path: str
    size: int
    mtime_ns: int
    split: str
    label: str
    patient: str


@dataclass
class ScanResult:
    root: Path
    records: list[ImageRecord]
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    synthetic: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint_records(self.records)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        out = {s: dict.fromkeys(CLASSES, 0) for s in SPLITS}
        for r in self.records:
            out[r.split][r.label] += 1
        return out

    def patients(self) -> dict[str, int]:
        """Distinct patients per split."""
        return {s: len({r.patient for r in self.records if r.split == s}) for s in SPLITS}


def fingerprint_records(records: list[ImageRecord]) -> str:
    """Hash of every image's path, size and mtime: changes when one is added, removed or touched."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.path):
        h.update(f"{r.path}\t{r.size}\t{r.mtime_ns}\n".encode())
    return h.hexdigest()


def content_fingerprint(root: Path, records: list[ImageRecord], workers: int = 8) -> str:
    """Hash of every image's path and sha256 of its bytes: reads every file, and catches an edit
    that keeps size and mtime, which the stat-only `fingerprint_records` misses."""

    def digest(r: ImageRecord) -> str:
        with open(root / r.path, "rb") as f:
            return f"{r.path}\t{hashlib.file_digest(f, 'sha256').hexdigest()}\n"

    ordered = sorted(records, key=lambda r: r.path)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        lines = pool.map(digest, ordered)
        return hashlib.sha256("".join(lines).encode()).hexdigest()


def tree_fingerprint(root: Path) -> str:
    """Fingerprint of the images under `root`, equal to `scan_tree(root).fingerprint` on a valid
    tree, without validating the layout or building records (for sensors).

    Kept within ~1.3x of `find -printf '%s %T@ %p'` on 100k files (`benchmarks/bench_scan.py`):
    names are listed and filtered per folder before any stat, each stat is an `fstatat` on the
    bare name, and folders are hashed in sorted order, so no global sort is needed (valid names
    end in `.jpeg`/`.jpg`, so sorting names sorts the lines).
    """
    h = hashlib.sha256()
    for split in sorted(SPLITS):
        for label in sorted(CLASSES):
            try:
                fd = os.open(root / split / label, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                names = sorted(filter(_NAME_OF[label], os.listdir(fd)))
                prefix, stat, lines = f"{split}/{label}/", os.stat, []
                for name in names:
                    st = stat(name, dir_fd=fd)
                    if S_ISREG(st.st_mode):
                        lines.append(f"{prefix}{name}\t{st.st_size}\t{st.st_mtime_ns}\n")
            finally:
                os.close(fd)
            h.update("".join(lines).encode())
    return h.hexdigest()


# Per class folder, whether a name is an image of that class (`FILENAME_RE` with the label fixed).
_NAME_OF = {c: re.compile(rf"{c}-\d+-\d+\.jpe?g", re.IGNORECASE).fullmatch for c in CLASSES}


def _stat_images(
    class_dir: Path, label: str, ignored: list[tuple[str, str]] | None
) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of each valid image in one class folder.

    Scans through a directory descriptor so each stat is an `fstatat` on the bare name, which
    is what keeps a 100k-file tree close to `find`. Invalid names go to `ignored` when given.
    """
    out = []
    fd = os.open(class_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as entries:
            for e in entries:
                name = e.name
                if name.startswith("."):
                    continue
                m = FILENAME_RE.match(name)
                try:
                    is_file = e.is_file()
                    if m is not None and m["label"].upper() == label and is_file:
                        st = e.stat()
                        out.append((name, st.st_size, st.st_mtime_ns))
                        continue
                    why = _why(is_file, m, label)
                except OSError as exc:  # a symlink loop, a dangling mount: name it, go on
                    why = f"cannot stat ({exc.strerror})"
                if ignored is not None:
                    ignored.append((f"{class_dir.parent.name}/{label}/{name}", why))
    finally:
        os.close(fd)
    return out


def _why(is_file: bool, m: re.Match | None, label: str) -> str:
    if not is_file:
        return "not a regular file"
    if m is None:
        return "name does not match <CLASS>-<patient>-<n>.jpeg"
    return f"name says class {m['label']} but folder is {label}"


def scan_tree(root: Path) -> ScanResult:
    """Scan `root/{train,test}/{CLASS}/` and validate the layout."""
    if not root.exists():
        raise ImageTreeError(f"image root {root} does not exist")
    if not root.is_dir():
        raise ImageTreeError(f"image root {root} is not a folder")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise ImageTreeError(
            f"image root {root} has no {' or '.join(missing)} folder; expected "
            f"{root}/{{train,test}}/{{{','.join(CLASSES)}}}/<CLASS>-<patient>-<n>.jpeg"
        )
    records: list[ImageRecord] = []
    ignored: list[tuple[str, str]] = []
    for split in SPLITS:
        split_dir = root / split
        with os.scandir(split_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        unknown = [e.name for e in entries if e.is_dir() and e.name not in CLASSES]
        if unknown:
            raise ImageTreeError(
                f"unknown class folder(s) {', '.join(str(split_dir / u) for u in unknown)}; "
                f"known classes: {', '.join(CLASSES)}"
            )
        for e in entries:
            if not e.is_dir() and not e.name.startswith("."):
                ignored.append((f"{split}/{e.name}", "not in a class folder"))
        for label in CLASSES:
            class_dir = split_dir / label
            if not class_dir.is_dir():
                raise ImageTreeError(f"class folder {class_dir} is missing")
            found = _scan_class(class_dir, split, label, records, ignored)
            if found == 0:
                raise ImageTreeError(f"class folder {class_dir} holds no images")
    return ScanResult(
        root=root,
        records=records,
        ignored=ignored,
        synthetic=(root / SYNTHETIC_MARKER).is_file(),
    )


def _scan_class(
    class_dir: Path,
    split: str,
    label: str,
    records: list[ImageRecord],
    ignored: list[tuple[str, str]],
) -> int:
    """Append the valid images of one class folder; return how many were found."""
    found = _stat_images(class_dir, label, ignored)
    for name, size, mtime_ns in found:
        patient = FILENAME_RE.match(name)["patient"]
        records.append(
            ImageRecord(f"{split}/{label}/{name}", size, mtime_ns, split, label, patient)
        )
    return len(found)


def write_manifest_csv(path: Path, records: list[ImageRecord]) -> None:
    """Write the image tree's manifest: one row per image, stat facts and parsed name."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "size", "mtime_ns", "split", "label", "patient"])
        for r in records:
            w.writerow([r.path, r.size, r.mtime_ns, r.split, r.label, r.patient])


def read_manifest_csv(path: Path) -> list[ImageRecord]:
    """The records a `write_manifest_csv` file holds."""
    with open(path, newline="") as f:
        return [
            ImageRecord(
                row["path"],
                int(row["size"]),
                int(row["mtime_ns"]),
                row["split"],
                row["label"],
                row["patient"],
            )
            for row in csv.DictReader(f)
        ]
