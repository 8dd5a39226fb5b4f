"""Patient-grouped folds: disjoint by patient, stratified, the recipe log's deal, fold samples."""

import importlib
import types
from pathlib import Path

import numpy as np
import pytest

from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.folds import FoldSpec
from oct_assets.ml.data import read_sample
from oct_assets.ml.folds import patient_folds, train_folds, write_fold_sample
from oct_assets_tests.fixtures_ml import REPO

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def recipe_log_folds(rows: list[tuple[str, str, str]], k: int, seed: int = 123) -> np.ndarray:
    """`scripts/recipe_cv.py`'s fold deal before it moved into the library (the reference)."""
    rng = np.random.default_rng(seed)
    labels_of: dict[str, list[str]] = {}
    for _, label, patient in rows:
        labels_of.setdefault(patient, []).append(label)
    main = {
        p: max(CLASSES, key=lambda c: (ls.count(c), -CLASSES.index(c)))
        for p, ls in labels_of.items()
    }
    fold_of = {}
    for label in CLASSES:
        group = sorted(p for p in main if main[p] == label)
        for i, p in enumerate(rng.permutation(group)):
            fold_of[p] = i % k
    return np.array([fold_of[p] for _, _, p in rows])


def test_folds_are_patient_disjoint_stratified_and_the_recipe_logs() -> None:
    rng = np.random.default_rng(5)
    patients = [str(p) for p in rng.integers(100, 160, size=300)]
    labels = [int(x) for x in rng.integers(0, 4, size=300)]
    rows = [(f"f{i}", CLASSES[labels[i]], p) for i, p in enumerate(patients)]
    for k in (3, 5):
        folds = patient_folds(labels, patients, k)
        assert np.array_equal(folds, recipe_log_folds(rows, k))
        for p in set(patients):
            assert len({folds[i] for i in range(300) if patients[i] == p}) == 1
        assert set(folds) == set(range(k))


def test_fold_sample_holds_out_one_fold_of_the_train_split(tiny_sample: Path, tmp_path: Path):
    sample = read_sample(tiny_sample)
    rows, folds = train_folds(sample, 4)
    seen = set()
    for f in range(4):
        fs = read_sample(write_fold_sample(sample, FoldSpec(f, 4), tmp_path / f"f{f}"))
        held = {fs.files[i] for i in fs.indices("test")}
        assert held == {sample.files[r] for r, g in zip(rows, folds, strict=True) if g == f}
        assert not set(fs.patients[fs.indices("test")]) & set(fs.patients[fs.indices("train")])
        assert set(fs.files) == {sample.files[r] for r in rows}  # the test split stays out
        assert all((fs.root / name).is_file() for name in fs.files)
        assert len(set(fs.labels[fs.indices("train")])) == 4  # every class still trains
        seen |= held
    assert seen == {sample.files[r] for r in rows}  # every train scan held out exactly once


def test_an_empty_fold_is_refused_naming_it(tiny_sample: Path, tmp_path: Path) -> None:
    sample = read_sample(tiny_sample)  # 4 train patients per class
    with pytest.raises(OctMLError, match="fold 5 of 6 holds no scans"):
        write_fold_sample(sample, FoldSpec(5, 6), tmp_path / "f5")


def test_recipe_cv_train_share_keeps_whole_patients_of_every_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`recipe_cv.py --train-share`: a fixed, class-stratified share of whole patients, the
    same for every fold, so recipes compare paired at a smaller training set."""
    recipe_cv = script("recipe_cv", monkeypatch)
    rng = np.random.default_rng(7)
    patients = [str(p) for p in rng.integers(1000, 1400, size=1200)]
    main = {p: int(rng.integers(0, 4)) for p in set(patients)}
    labels = [main[p] for p in patients]
    assert recipe_cv.trained_patients(labels, patients, 1.0).all()
    kept = recipe_cv.trained_patients(labels, patients, 0.45)
    by_patient = {p: {bool(k) for k, q in zip(kept, patients, strict=True) if q == p} for p in main}
    assert all(len(v) == 1 for v in by_patient.values())  # a patient is kept or dropped whole
    for c in range(4):
        group = [p for p in main if main[p] == c]
        share = sum(True in by_patient[p] for p in group) / len(group)
        assert abs(share - 0.45) < 0.05, (c, share)
    assert np.array_equal(kept, recipe_cv.trained_patients(labels, patients, 0.45))  # fixed


def test_recipe_compare_groups_a_recipes_seeds_and_pairs_them_scan_by_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recipe_compare.py --run DIR/<key>` reads every seed's fold files (and `<key>-seed<s>`
    one seed); one model's correctness is each scan's share of seeds right; the ensemble is the
    seeds' mean; a scan without a prediction is refused, named."""
    recipe_compare = script("recipe_compare", monkeypatch)
    names = ["a.jpeg", "b.jpeg", "c.jpeg"]
    # seed 0 reads a, b right; seed 1 reads a right; classes CNV, DME, CNV.
    probs = {
        0: {"a.jpeg": [0.9, 0.1, 0, 0], "b.jpeg": [0.2, 0.8, 0, 0], "c.jpeg": [0.1, 0.9, 0, 0]},
        1: {"a.jpeg": [0.6, 0.4, 0, 0], "b.jpeg": [0.7, 0.3, 0, 0], "c.jpeg": [0.4, 0.6, 0, 0]},
    }
    for seed, by_name in probs.items():
        for fold, chunk in enumerate([names[:2], names[2:]]):
            rows = [",".join([n, *map(str, by_name[n])]) for n in chunk]
            text = "\n".join(["file,CNV,DME,DRUSEN,NORMAL", *rows]) + "\n"
            (tmp_path / f"k1-seed{seed}-fold{fold}.csv").write_text(text)
    (tmp_path / "k10-seed0-fold0.csv").write_text("file,CNV,DME,DRUSEN,NORMAL\n")  # other key
    run = recipe_compare.read_run(tmp_path / "k1", names)
    assert run.seeds == [0, 1] and run.probs.shape == (2, 3, 4)
    true = np.array([0, 1, 0])
    assert run.correct(true).tolist() == [1.0, 0.5, 0.0]
    assert np.allclose(run.ensemble()[1], [0.45, 0.55, 0, 0])
    one = recipe_compare.read_run(tmp_path / "k1-seed1", names)
    assert one.seeds == [1] and np.array_equal(one.probs[0], run.probs[1])
    with pytest.raises(SystemExit, match=r"1 scans have no prediction, e\.g\. d\.jpeg"):
        recipe_compare.read_run(tmp_path / "k1", [*names, "d.jpeg"])


def script(name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module of `scripts/`, imported as the scripts import each other (by bare name)."""
    monkeypatch.syspath_prepend(REPO / "scripts")
    return importlib.import_module(name)
