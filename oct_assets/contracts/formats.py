"""The folder formats every layer reads and writes: one definition of each file name and column.

- A **sample folder** (`reduced_sample`): the images under their relative paths, `images.csv`
  (`file, split, label, patient`), and `manifest.json` with at least `salt` and `classes`
  (`manifest.SampleManifest`).
- A **model folder** (`trained_model`, `cluster_model`): `model.pt` (a state_dict) and
  `model.json` (classes, input geometry, config, metrics: `model_info.ModelInfo`); training
  also keeps its `train_config.json` there.
- A **predictions folder**: `predictions.csv` (one row per test image), `metrics.json` and two PNGs.
- A **fold model folder** (`cv_model`): a model folder plus its fold sample (`fold_sample/`, a
  sample folder whose test split is the held-out fold) and that fold's predictions (`oof/`).
- `cv_report`: `oof_predictions.csv`; `label_audit`: `label_audit.csv`, `near_duplicates.csv`.

Pure Python: shipped to cluster nodes beside the ML core.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SPLITS: tuple[str, ...] = ("train", "test")
CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")

# Written last into every salted output folder (the store's completion marker,
# `manifest.SaltedManifest`); a sample folder's manifest also carries its `salt` and `classes`.
MANIFEST_JSON = "manifest.json"

IMAGES_CSV = "images.csv"
SAMPLE_COLUMNS: tuple[str, ...] = ("file", "split", "label", "patient")

MODEL_PT = "model.pt"
MODEL_JSON = "model.json"
MODEL_FILES: tuple[str, ...] = (MODEL_PT, MODEL_JSON)
TRAIN_CONFIG_JSON = "train_config.json"

PREDICTIONS_CSV = "predictions.csv"
METRICS_JSON = "metrics.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CAM_GRID_PNG = "cam_grid.png"

FOLD_SAMPLE = "fold_sample"
OOF = "oof"
OOF_CSV = "oof_predictions.csv"  # one row per train scan: its fold models' mean probabilities
OOF_COLUMNS: tuple[str, ...] = ("file", "patient", "fold", "label", "predicted")  # + classes
LABEL_AUDIT_CSV = "label_audit.csv"  # confident out-of-fold disagreements, most confident first
AUDIT_COLUMNS: tuple[str, ...] = (
    "rank",
    "file",
    "patient",
    "fold",
    "label",
    "predicted",
    "p_label",
    "p_predicted",
)  # then one column per class
# Pairs of scans across patients or splits whose difference hash (dHash of a
# (HASH_SIDE + 1) x HASH_SIDE thumbnail: 256 bits) differs in at most `near_bits` bits.
NEAR_DUPLICATES_CSV = "near_duplicates.csv"
NEAR_DUPLICATE_COLUMNS: tuple[str, ...] = (
    "file_a",
    "split_a",
    "patient_a",
    "file_b",
    "split_b",
    "patient_b",
    "differing_bits",
)
HASH_SIDE = 16
# The default `near_bits`: a re-encoded copy differs in ~6 bits, one resized to 80% in ~27;
# distinct real OCT2017 scans in 66 or more.
NEAR_BITS = 32


def write_images_csv(folder: Path, rows: Iterable[Mapping[str, str]]) -> None:
    """Write a sample folder's `images.csv` (rows carry at least `SAMPLE_COLUMNS`)."""
    with open(folder / IMAGES_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SAMPLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a CSV written by this project (`images.csv`, `predictions.csv`) as a dict."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def interval_text(ci: Any) -> str:
    """A `[low, high]` interval of `metrics.json` (`*_ci95`) as text; "n/a" when there is none
    (an evaluation older than the intervals)."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"[{float(ci[0]):.3f}, {float(ci[1]):.3f}]"
    return "n/a"
