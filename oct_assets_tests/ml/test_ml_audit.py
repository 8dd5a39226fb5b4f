"""The label audit: a flipped label tops the out-of-fold disagreements; near-duplicates across
patients or splits are found by their difference hash, distinct scans are not."""

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from oct_assets.contracts.folds import FoldSpec
from oct_assets.ml.audit import disagreements, leaking_duplicates
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.data import read_sample
from oct_assets.ml.folds import out_of_fold, write_fold_sample
from oct_assets.ml.predict import evaluate
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import write_index, write_sample

K = 4


def rows_of(sample_dir: Path) -> list[list[str]]:
    with open(sample_dir / "images.csv", newline="") as fh:
        return [[r["file"], r["split"], r["label"], r["patient"]] for r in csv.DictReader(fh)]


def test_disagreements_rank_the_most_confident_first() -> None:
    true = np.array([0, 0, 1, 2])
    probs = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.05, 0.95, 0, 0], [0.4, 0.6, 0, 0]])
    assert [d.row for d in disagreements(true, probs)] == [1, 3]
    assert [d.row for d in disagreements(true, probs, min_confidence=0.7)] == [1]


def test_a_flipped_label_tops_the_audit(tmp_path: Path) -> None:
    sample_dir = write_sample(tmp_path / "sample", train_per_class=16, test_per_class=1)
    rows = rows_of(sample_dir)
    flipped = next(i for i, r in enumerate(rows) if r[1] == "train" and r[2] == "CNV")
    rows[flipped][2] = "DRUSEN"  # a CNV scan labelled DRUSEN (its patient's other scan is CNV)
    write_index(sample_dir, [tuple(r) for r in rows], "flipped")
    sample = read_sample(sample_dir)
    config = TrainConfig(
        epochs=15, image_size=32, batch_size=8, width=8, blocks=3, val_fraction=0.0,
        decode_workers=1, threads=1, augment="none",
    )  # fmt: skip
    members = []
    for f in range(K):
        d = tmp_path / f"m{f}"
        fs = write_fold_sample(sample, FoldSpec(f, K), d / "fold_sample")
        train(fs, d, config, cache_dir=tmp_path / "cache")
        evaluate(d, fs, d / "oof", cache_dir=tmp_path / "cache")
        members.append(d)
    oof = out_of_fold(members)
    found = disagreements(oof.labels, oof.mean_probs())
    accuracy = (oof.mean_probs().argmax(1) == oof.labels).mean()
    assert found, f"no disagreement at all (accuracy {accuracy})"
    top = found[0]
    assert oof.files[top.row] == rows[flipped][0]
    assert oof.classes[top.predicted] == "CNV" and top.p_predicted > 0.5


def test_near_duplicates_across_patients_and_splits(tmp_path: Path) -> None:
    sample_dir = write_sample(tmp_path / "sample", train_per_class=4, test_per_class=2)
    rows = rows_of(sample_dir)
    source = rows[0][0]  # a train scan, copied as a test scan of another patient
    copy = "test/CNV/CNV-9999-0.jpeg"
    shutil.copy(sample_dir / source, sample_dir / copy)
    rows.append([copy, "test", "CNV", "9999"])
    other = rows[5][0]  # another train scan, brightened and re-encoded as a third patient's
    resized = "train/DME/DME-9998-0.jpeg"
    with Image.open(sample_dir / other) as im:
        im.point(lambda v: min(255, v + 12)).save(sample_dir / resized, quality=60)
    rows.append([resized, "train", "DME", "9998"])
    write_index(sample_dir, [tuple(r) for r in rows], "dup")
    found = leaking_duplicates(read_sample(sample_dir))
    pairs = {(r["file_a"], r["file_b"]) for r in found}
    assert pairs == {(source, copy), (other, resized)}, found
    assert found[0]["differing_bits"] == 0 and found[0]["split_b"] == "test"
