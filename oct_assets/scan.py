"""Scan an OCT2017-layout image tree with `stat` only: the manifest and its fingerprint.

Cheap enough for the full ~84k-image release: no file is opened, let alone decoded. Layout
problems that make the tree unusable raise `ImageTreeError` naming the path; files whose names
do not follow `<CLASS>-<patient>-<n>.jpeg` are left out and reported in `ScanResult.ignored`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from oct_assets.constants import CLASSES, FILENAME_RE, IMAGE_SUFFIXES, SPLITS, SYNTHETIC_MARKER


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


def tree_fingerprint(root: Path) -> str:
    """Fingerprint of the images under `root` without validating the layout (for sensors)."""
    h = hashlib.sha256()
    lines = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        with os.scandir(split_dir) as classes:
            class_dirs = [e.name for e in classes if e.is_dir()]
        for label in class_dirs:
            with os.scandir(split_dir / label) as entries:
                for e in entries:
                    if e.name.endswith(IMAGE_SUFFIXES) and FILENAME_RE.match(e.name):
                        st = e.stat()
                        lines.append(f"{split}/{label}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n")
    lines.sort()
    h.update("".join(lines).encode())
    return h.hexdigest()


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
    n = 0
    with os.scandir(class_dir) as it:
        for e in it:
            rel = f"{split}/{label}/{e.name}"
            if e.name.startswith("."):
                continue
            if not e.is_file():
                ignored.append((rel, "not a regular file"))
                continue
            m = FILENAME_RE.match(e.name)
            if m is None:
                ignored.append((rel, "name does not match <CLASS>-<patient>-<n>.jpeg"))
                continue
            if m["label"].upper() != label:
                ignored.append((rel, f"name says class {m['label']} but folder is {label}"))
                continue
            st = e.stat()
            records.append(ImageRecord(rel, st.st_size, st.st_mtime_ns, split, label, m["patient"]))
            n += 1
    return n
