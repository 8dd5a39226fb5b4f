"""Patient-grouped cross-validation folds, the sample folder of one fold, the out-of-fold
predictions of fold models, and the pooled figures a recipe is judged on.

A model trained on the other folds predicts each fold, so every scan gets one prediction from a
model that never saw its patient. Pooled over all scans that is a far steadier figure than one
small test split (`scripts/recipe_cv.py`, the `cv_model` partitions and `cv_report`).
Free of torch at import time (the Dagster definitions import its names); the metrics load it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.files import write_bytes
from oct_assets.contracts.folds import FOLD_SEED, FoldSpec
from oct_assets.contracts.formats import (
    FOLD_SAMPLE,
    OOF,
    OOF_COLUMNS,
    PREDICTIONS_CSV,
    read_csv_rows,
    write_images_csv,
)
from oct_assets.contracts.manifest import SampleManifest
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.data import Sample, read_sample


def patient_folds(
    labels: Sequence[int], patients: Sequence[str], k: int, seed: int = FOLD_SEED
) -> np.ndarray:
    """Fold number per row: patients dealt round-robin per class (their most common one; ties
    go to the lower class index), each class's patients in a seeded order."""
    rng = np.random.default_rng(seed)
    labels_of: dict[str, list[int]] = {}
    for label, patient in zip(labels, patients, strict=True):
        labels_of.setdefault(str(patient), []).append(int(label))
    main = {p: int(np.bincount(ls).argmax()) for p, ls in labels_of.items()}
    fold_of: dict[str, int] = {}
    for label in range(max(main.values(), default=-1) + 1):  # every class, as the recipe log
        group = sorted(p for p in main if main[p] == label)
        for i, p in enumerate(rng.permutation(group)):
            fold_of[str(p)] = i % k
    return np.array([fold_of[str(p)] for p in patients], dtype=np.int64)


def train_folds(sample: Sample, k: int, seed: int = FOLD_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of the sample's train split, the fold of each): the test split stays out."""
    rows = sample.indices("train")
    return rows, patient_folds(sample.labels[rows], sample.patients[rows], k, seed)


def write_fold_sample(sample: Sample, spec: FoldSpec, dest: Path) -> Path:
    """A sample folder of the sample's train split whose `test` split is the held-out fold and
    whose `train` split is the other folds; the scans are symlinks into `sample`.

    Raises OctMLError naming the fold when it is empty (fewer patients per class than folds).
    """
    rows, folds = train_folds(sample, spec.k, spec.fold_seed)
    if not (folds == spec.fold).any():
        raise OctMLError(
            f"fold {spec.fold} of {spec.k} holds no scans: {sample.root} has fewer train "
            f"patients per class than folds"
        )
    dest.mkdir(parents=True)
    lines = []
    for r, f in zip(rows, folds, strict=True):
        rel = sample.files[r]
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sample.path(r).resolve(), dest / rel)
        split = "test" if f == spec.fold else "train"
        label = sample.classes[sample.labels[r]]
        lines.append({"file": rel, "split": split, "label": label, "patient": sample.patients[r]})
    write_images_csv(dest, lines)
    salt = hashlib.sha256(repr((sample.salt, spec.as_dict())).encode()).hexdigest()[:16]
    SampleManifest(salt=salt, classes=tuple(sample.classes), fold=spec.as_dict()).write(dest)
    return dest


def scan_widths(paths: Sequence[Path]) -> np.ndarray:
    """Each scan's width in pixels, from its header (the preset's input must not depend on it)."""
    widths = []
    for p in paths:
        with Image.open(p) as im:
            widths.append(im.width)
    return np.array(widths, dtype=np.int64)


def pooled_figures(
    true: np.ndarray,
    probs: np.ndarray,
    patients: np.ndarray,
    classes: list[str],
    widths: np.ndarray,
) -> dict[str, Any]:
    """The pooled out-of-fold figures: `evaluate`'s metrics (accuracy, per-class recall,
    confusion matrix, patient-bootstrap intervals, per-patient accuracy, ROC AUC) over every
    scan, and the accuracy by scan width."""
    from oct_assets.ml.predict import classification_metrics, with_uncertainty  # torch: on call

    pred = probs.argmax(1)
    m = with_uncertainty(classification_metrics(true, pred, classes), true, probs, patients)
    right = pred == true
    m["by_width"] = {
        str(int(w)): {"correct": int(right[widths == w].sum()), "n": int((widths == w).sum())}
        for w in np.unique(widths)
    }
    return m


@dataclass(frozen=True)
class OutOfFold:
    """Every train scan's out-of-fold probabilities, per training seed, from fold models."""

    classes: list[str]
    files: list[str]
    labels: np.ndarray  # class index per scan
    patients: np.ndarray
    folds: np.ndarray  # the fold that held the scan out
    widths: np.ndarray
    probs: dict[int, np.ndarray]  # seed -> (scans, classes)
    members: list[dict[str, Any]]  # per fold model: fold, seed, accuracy, n, dir

    def mean_probs(self) -> np.ndarray:
        """The seeds' mean: each scan as the ensemble of its fold's models reads it."""
        return np.mean(list(self.probs.values()), axis=0)

    def report(self) -> dict[str, Any]:
        """`pooled_figures` of the seeds' mean, each seed's pooled accuracy, per fold model, and
        the scans every seed gets wrong."""
        pooled = pooled_figures(
            self.labels, self.mean_probs(), self.patients, self.classes, self.widths
        )
        per_seed = {
            str(seed): round(float((p.argmax(1) == self.labels).mean()), 5)
            for seed, p in self.probs.items()
        }
        # Errors no seed mends (`recipe_cv.py`'s seed agreement): hard scans, or wrong labels.
        stacked = np.stack(list(self.probs.values()))  # seeds x scans x classes
        wrong = np.flatnonzero((stacked.argmax(2) != self.labels).all(0))
        return {
            "pooled": pooled,
            "per_seed": per_seed,
            "members": self.members,
            "wrong_for_every_seed": [self.files[i] for i in wrong],
        }


def out_of_fold(member_dirs: Sequence[Path]) -> OutOfFold:
    """Gather the held-out predictions of fold model folders (`cv_model`).

    Raises OctMLError naming the seed and scan when a train scan has no out-of-fold prediction
    of some seed, or more than one, or when the members were cut from different samples.
    """
    if not member_dirs:
        raise OctMLError("no fold models to gather out-of-fold predictions from")
    first = read_sample(Path(member_dirs[0]) / FOLD_SAMPLE)
    index = {f: i for i, f in enumerate(first.files)}
    n, c = len(first), len(first.classes)
    probs: dict[int, np.ndarray] = {}
    seen: dict[int, np.ndarray] = {}
    folds = np.full(n, -1, dtype=np.int64)
    members = []
    for d in map(Path, member_dirs):
        fs = read_sample(d / FOLD_SAMPLE)
        if sorted(fs.files) != sorted(first.files) or fs.classes != first.classes:
            raise OctMLError(f"fold model {d} was cut from other scans than {member_dirs[0]}")
        held_out = SampleManifest.read(d / FOLD_SAMPLE).fold
        if held_out is None:
            raise OctMLError(f"{d / FOLD_SAMPLE} is not a fold sample (its manifest has no fold)")
        spec = FoldSpec(**held_out)
        seed = TrainConfig.from_saved(ModelInfo.read(d).config).seed
        p, count = probs.setdefault(seed, np.zeros((n, c))), seen.setdefault(seed, np.zeros(n))
        rows = read_csv_rows(d / OOF / PREDICTIONS_CSV)
        for r in rows:
            i = index[r["file"]]
            p[i] = [float(r[name]) for name in first.classes]
            count[i] += 1
            folds[i] = spec.fold
        right = sum(r["true_class"] == r["predicted_class"] for r in rows)
        members.append(
            {
                "fold": spec.fold,
                "seed": seed,
                "accuracy": round(right / max(len(rows), 1), 5),
                "n": len(rows),
                "dir": str(d),
            }
        )
    for seed, count in seen.items():
        bad = np.flatnonzero(count != 1)
        if len(bad):
            raise OctMLError(
                f"seed {seed}: train scan {first.files[bad[0]]} has {int(count[bad[0]])} "
                f"out-of-fold predictions, not 1 (and {len(bad) - 1} more)"
            )
    return OutOfFold(
        classes=list(first.classes),
        files=list(first.files),
        labels=first.labels,
        patients=first.patients,
        folds=folds,
        widths=scan_widths([first.path(i) for i in range(n)]),
        probs=probs,
        members=members,
    )


def write_oof_csv(path: Path, oof: OutOfFold) -> None:
    """`oof_predictions.csv`: one row per train scan, the seeds' mean probabilities."""
    p = oof.mean_probs()
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([*OOF_COLUMNS, *oof.classes])
    for i, f in enumerate(oof.files):
        label, pred = oof.classes[oof.labels[i]], oof.classes[int(p[i].argmax())]
        w.writerow(
            [f, oof.patients[i], int(oof.folds[i]), label, pred, *(f"{x:.6f}" for x in p[i])]
        )
    write_bytes(path, buf.getvalue().encode())
