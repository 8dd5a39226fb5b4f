"""Reading a sample folder (images.csv + manifest.json) and splitting it by patient."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oct_assets.contracts.errors import SampleError
from oct_assets.contracts.formats import IMAGES_CSV, MANIFEST_JSON, SAMPLE_COLUMNS, SPLITS
from oct_assets.contracts.manifest import SampleManifest


@dataclass(frozen=True)
class Sample:
    """The rows of a sample's images.csv, in file order, with labels as class indices.

    Row order is the order of the decode cache, so an index into these arrays is an index
    into the cache too.
    """

    root: Path
    salt: str
    classes: tuple[str, ...]
    files: tuple[str, ...]
    splits: np.ndarray  # str, "train" | "test"
    labels: np.ndarray  # int64 class index
    patients: np.ndarray  # str

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split, in file order."""
        if split not in SPLITS:
            raise SampleError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return np.flatnonzero(self.splits == split)

    def fingerprint(self) -> str:
        """Hash of the rows, so a cache built for other rows is never reused by mistake."""
        h = hashlib.sha256()
        for row in zip(self.files, self.splits, self.labels, strict=True):
            h.update(repr(tuple(str(v) for v in row)).encode())
        return h.hexdigest()[:16]


def read_sample(sample_dir: Path) -> Sample:
    """Read and validate a sample folder; raises SampleError naming the file and row at fault."""
    root = Path(sample_dir)
    manifest_path, csv_path = root / MANIFEST_JSON, root / IMAGES_CSV
    for p in (manifest_path, csv_path):
        if not p.is_file():
            raise SampleError(f"sample folder {root} has no {p.name}")
    manifest = SampleManifest.read(root)
    salt, classes = manifest.salt, list(manifest.classes)

    class_index = {c: i for i, c in enumerate(classes)}
    files, splits, labels, patients = [], [], [], []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in SAMPLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SampleError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            rel = Path(row["file"])
            if rel.is_absolute() or ".." in rel.parts:
                raise SampleError(f"{csv_path}:{line}: file must be relative to the sample")
            if row["split"] not in SPLITS:
                raise SampleError(f"{csv_path}:{line}: split {row['split']!r} not in {SPLITS}")
            if row["label"] not in class_index:
                raise SampleError(
                    f"{csv_path}:{line}: label {row['label']!r} not in manifest classes {classes}"
                )
            files.append(rel.as_posix())
            splits.append(row["split"])
            labels.append(class_index[row["label"]])
            patients.append(row["patient"])
    if not files:
        raise SampleError(f"{csv_path} lists no images")
    return Sample(
        root=root,
        salt=salt,
        classes=tuple(classes),
        files=tuple(files),
        splits=np.array(splits),
        labels=np.array(labels, dtype=np.int64),
        patients=np.array(patients),
    )


def require_all_classes(sample: Sample, split: str) -> None:
    """Training needs every class; name the first one that has no images in the split."""
    counts = np.bincount(sample.labels[sample.indices(split)], minlength=len(sample.classes))
    for name, n in zip(sample.classes, counts, strict=True):
        if n == 0:
            raise SampleError(
                f"class {name!r} has no images in the {split} split of {sample.root / 'images.csv'}"
            )


def patient_split(
    sample: Sample, indices: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (fit, validation) so that no patient is on both sides.

    Patients are drawn per class (by their most common label) in a seeded order until the
    class's validation share reaches `fraction`, so every class with at least two patients
    gets validation images. Returns sorted row indices.
    """
    if fraction <= 0:
        return np.sort(indices), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    indices = np.sort(indices)
    patients, owner = np.unique(sample.patients[indices], return_inverse=True)  # sorted ids
    order = np.argsort(owner, kind="stable")
    rows_of = np.split(indices[order], np.cumsum(np.bincount(owner))[:-1])
    main_label = [int(np.bincount(sample.labels[r]).argmax()) for r in rows_of]
    val: list[np.ndarray] = []
    for c in range(len(sample.classes)):
        group = [k for k in range(len(patients)) if main_label[k] == c]
        if len(group) < 2:
            continue  # a lone patient must stay in the fit set or the class is never learnt
        target = fraction * sum(len(rows_of[k]) for k in group)
        taken = 0
        for k in rng.permutation(group)[: len(group) - 1]:
            if taken >= target:
                break
            val.append(rows_of[k])
            taken += len(rows_of[k])
    val_rows = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    fit_rows = np.setdiff1d(indices, val_rows)
    return fit_rows, val_rows
