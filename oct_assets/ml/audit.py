"""A label audit: scans whose out-of-fold prediction confidently disagrees with their label, and
near-duplicate scans (a difference hash) that leak across patients or across train and test.

A scan a model that never saw its patient calls confidently another class is either a hard
case or a wrong label; both are worth a person's look, most confident first. A near-duplicate
across patients or splits inflates a test figure or hides a patient-grouping error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oct_assets.contracts.formats import AUDIT_COLUMNS, HASH_SIDE, NEAR_BITS, NEAR_DUPLICATE_COLUMNS
from oct_assets.ml.data import Sample

POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)  # bits per byte


@dataclass(frozen=True)
class Disagreement:
    """One scan whose out-of-fold prediction is not its label."""

    row: int  # index into the arrays given to `disagreements`
    label: int
    predicted: int
    p_label: float
    p_predicted: float


def disagreements(
    true: np.ndarray, probs: np.ndarray, min_confidence: float = 0.5
) -> list[Disagreement]:
    """Scans predicted as another class with at least `min_confidence`, most confident first
    (ties: the lower probability of the label first, then row order)."""
    pred = probs.argmax(1)
    rows = np.arange(len(true))
    p_pred, p_true = probs[rows, pred], probs[rows, true]
    chosen = np.flatnonzero((pred != true) & (p_pred >= min_confidence))
    order = sorted(chosen, key=lambda r: (-p_pred[r], p_true[r], r))
    return [
        Disagreement(int(r), int(true[r]), int(pred[r]), float(p_true[r]), float(p_pred[r]))
        for r in order
    ]


def write_audit_csv(
    path: Path,
    found: Sequence[Disagreement],
    files: Sequence[str],
    patients: Sequence[str],
    folds: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
) -> None:
    """`label_audit.csv`: one ranked row per disagreement, with every class's probability."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([*AUDIT_COLUMNS, *classes])
    for rank, d in enumerate(found, start=1):
        w.writerow(
            [
                rank,
                files[d.row],
                patients[d.row],
                int(folds[d.row]),
                classes[d.label],
                classes[d.predicted],
                f"{d.p_label:.6f}",
                f"{d.p_predicted:.6f}",
                *(f"{p:.6f}" for p in probs[d.row]),
            ]
        )
    path.write_text(buf.getvalue())


def dhash(path: Path, side: int = HASH_SIDE) -> np.ndarray:
    """Difference hash: is each pixel of a (side + 1) x side grayscale thumbnail brighter than
    its right neighbour; `side * side` bits, packed. Robust to re-encoding and small changes of
    brightness or size, unlike a file hash."""
    with Image.open(path) as im:
        im.draft("L", (side * 4, side * 4))  # JPEG: decode at a reduced scale, fast
        small = im.convert("L").resize((side + 1, side), Image.Resampling.BOX)
    px = np.asarray(small, dtype=np.int16)
    return np.packbits(px[:, 1:] > px[:, :-1])


def near_duplicates(hashes: np.ndarray, max_bits: int = NEAR_BITS) -> list[tuple[int, int, int]]:
    """Pairs (i, j, differing bits) with i < j whose hashes differ in at most `max_bits`.

    All pairs, one row of the XOR table at a time (O(n^2) byte look-ups, vectorised): about a
    second for 5,000 scans, a minute for 40,000.
    """
    pairs = []
    for i in range(len(hashes) - 1):
        d = POPCOUNT[np.bitwise_xor(hashes[i + 1 :], hashes[i])].sum(1, dtype=np.int64)
        for j in np.flatnonzero(d <= max_bits):
            pairs.append((i, i + 1 + int(j), int(d[j])))
    return pairs


def leaking_duplicates(sample: Sample, max_bits: int = NEAR_BITS) -> list[dict[str, Any]]:
    """Near-duplicate scans of the sample (train and test) that belong to different patients
    or different splits, closest first: rows of `near_duplicates.csv`."""
    hashes = np.stack([dhash(sample.path(i)) for i in range(len(sample))])
    found = []
    for i, j, bits in near_duplicates(hashes, max_bits):
        a, b = (sample.splits[i], sample.patients[i]), (sample.splits[j], sample.patients[j])
        if a[1] != b[1] or a[0] != b[0]:
            found.append(
                dict(
                    zip(
                        NEAR_DUPLICATE_COLUMNS,
                        (sample.files[i], *a, sample.files[j], *b, bits),
                        strict=True,
                    )
                )
            )
    return sorted(found, key=lambda r: (r["differing_bits"], r["file_a"], r["file_b"]))


def write_rows_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(columns))
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())
