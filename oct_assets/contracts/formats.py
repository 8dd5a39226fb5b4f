"""The folder formats every layer reads and writes: one definition of each file name and column.

- A **sample folder** (`reduced_sample`): the images under their relative paths, `images.csv`
  (`file, split, label, patient`), and `manifest.json` with at least `salt` and `classes`
  (`manifest.SampleManifest`).
- A **model folder** (`trained_model`, `cluster_model`): `model.pt` (a state_dict) and
  `model.json` (classes, input geometry, config, metrics: `model_info.ModelInfo`); training
  also keeps its `train_config.json` there.
- A **predictions folder**: `predictions.csv` (one row per test image), `metrics.json` and two PNGs.

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
