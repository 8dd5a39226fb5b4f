"""Score a training recipe on real scans the honest way: every image predicted by a model that
never saw its patient.

The images of one or more folders are pooled and split into k folds by patient, stratified by
class; for each fold a model trains on the others and predicts it. A folder is either an
OCT2017 folder (`{train,test}/<CLASS>/`, both splits taken) or an unsplit one
(`<CLASS>/<CLASS>-<patient>-<n>.jpeg`, e.g. `../shared/real_oct_more/scans`); patients are keyed
by the id in the file name, so a patient with scans in two folders stays on one side of every
fold. The pooled accuracy over all images is a far steadier guide than one small test split,
which is what a recipe should be chosen on. `--official` also trains on the folder's own train
split and scores its test split, as `test_real_data.py` does (OCT2017 folders only). Uses only
the public ML entry points (`train`, `evaluate`), so it measures exactly what the assets run.

    .venv/bin/python scripts/recipe_cv.py --images ../shared/real_oct/OCT2017 \
        --set '{"epochs": 60}' --seeds 0,1 --official
    .venv/bin/python scripts/recipe_cv.py --images ../shared/real_oct/OCT2017 \
        --images ../shared/real_oct_more/scans --folds 5 --seeds 0,1,2 --out /tmp/cv

`--train-share S` trains each fold's model on the patients of a fixed, class-stratified share
S of all patients only (those of the other folds), while every scan is still predicted by a
model that never saw its patient: the same held-out scans at a smaller training set, so recipes
can be compared, paired, at several training-set sizes (`scripts/recipe_compare.py`).

`--out DIR` keeps every fold's out-of-fold probabilities as `DIR/<run>-seed<s>-fold<k>.csv` (the
run's key hashes the recipe, the folds and the scans) and reuses them when run again, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from oct_assets.contracts.folds import FOLD_SEED
from oct_assets.contracts.formats import CLASSES, PREDICTIONS_CSV, SPLITS, read_csv_rows
from oct_assets.ml.config import real_data_config
from oct_assets.ml.folds import patient_folds, pooled_figures, scan_widths
from oct_assets.ml.metrics import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED
from oct_assets.ml.predict import evaluate
from oct_assets.ml.train import train

TRAIN_SHARE_GROUPS = 20  # --train-share keeps whole groups of patients: steps of 5%


def is_split(folder: Path) -> bool:
    """Whether `folder` is an OCT2017 folder (`{train,test}/<CLASS>/`) rather than an unsplit
    one (`<CLASS>/`)."""
    return any((folder / split).is_dir() for split in SPLITS)


def list_images(folders: list[Path]) -> tuple[list[tuple[str, str, str]], dict[str, Path]]:
    """(name, class, patient) of every scan of the folders, in a fixed order, and each name's
    file. With one folder a name is the path relative to it (`train/CNV/CNV-1-1.jpeg`); with
    several it is prefixed by the folder's position and name (`1-scans/CNV/CNV-7-2.jpeg`).

    Raises SystemExit naming a folder that holds no scans.
    """
    rows, files = [], {}
    for i, folder in enumerate(folders):
        prefix = f"{i}-{folder.name}/" if len(folders) > 1 else ""
        subdirs = [f"{split}/{label}" for split in SPLITS for label in CLASSES]
        if not is_split(folder):
            subdirs = list(CLASSES)
        found = 0
        for sub in subdirs:
            for f in sorted((folder / sub).glob("*.jpeg")):
                name = f"{prefix}{sub}/{f.name}"
                rows.append((name, sub.rsplit("/", 1)[-1], f.name.split("-")[1]))
                files[name] = f.resolve()
                found += 1
        if not found:
            raise SystemExit(f"{folder}: no {{train,test}}/<CLASS>/*.jpeg nor <CLASS>/*.jpeg")
    return rows, files


def write_sample(dest: Path, files: dict[str, Path], rows: list, splits: list[str | None]) -> Path:
    """A sample folder (images.csv + manifest.json, images symlinked) with the given splits;
    a row whose split is None is left out."""
    dest.mkdir(parents=True)
    lines = [
        (rel, split, label, patient)
        for (rel, label, patient), split in zip(rows, splits, strict=True)
        if split is not None
    ]
    for rel, *_ in lines:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(files[rel], dest / rel)
    with open(dest / "images.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "split", "label", "patient"])
        writer.writerows(lines)
    salt = hashlib.sha256(repr(lines).encode()).hexdigest()[:16]
    (dest / "manifest.json").write_text(json.dumps({"salt": salt, "classes": list(CLASSES)}))
    return dest


def score(sample: Path, config: dict, work: Path) -> tuple[dict, dict[str, np.ndarray], float]:
    """Train on the sample's train split, predict its test split.

    Returns (metrics, {file: class probabilities}, seconds).
    """
    started = time.perf_counter()
    model = work / "model"
    train(sample, model, real_data_config(**config), cache_dir=work / "cache")
    metrics = evaluate(model, sample, work / "predictions", cache_dir=work / "cache")
    probs = read_probs(work / "predictions" / PREDICTIONS_CSV)
    return metrics, probs, time.perf_counter() - started


def read_probs(path: Path) -> dict[str, np.ndarray]:
    """{file: class probabilities} of a predictions CSV or a kept out-of-fold file."""
    return {r["file"]: np.array([float(r[c]) for c in CLASSES]) for r in read_csv_rows(path)}


def pooled_report(
    rows: list[tuple[str, str, str]], probs: dict[str, np.ndarray], widths: np.ndarray
) -> list[str]:
    """Pooled accuracy with its patient-bootstrap interval, per-patient accuracy, and accuracy
    by scan width (the preset's input must not depend on it), as printable lines: the figures
    of `cv_report` (`oct_assets.ml.folds.pooled_figures`)."""
    true = np.array([CLASSES.index(label) for _, label, _ in rows])
    p = np.stack([probs[rel] for rel, _, _ in rows])
    patients = np.array([patient for _, _, patient in rows])
    m = pooled_figures(true, p, patients, list(CLASSES), widths)
    return [
        f"accuracy {m['accuracy']:.4f} (95% CI {m['accuracy_ci95'][0]:.3f}-"
        f"{m['accuracy_ci95'][1]:.3f}, bootstrap over {m['n_patients']} patients), "
        f"per patient {m['patient_accuracy']:.4f}, macro ROC AUC {m['macro_roc_auc']:.4f}",
        "recall "
        + ", ".join(
            f"{c} {m['per_class'][c]['recall']:.3f} ({m['per_class'][c]['recall_ci95'][0]:.3f}-"
            f"{m['per_class'][c]['recall_ci95'][1]:.3f})"
            for c in CLASSES
        ),
        f"confusion (rows true {', '.join(CLASSES)}): {m['confusion_matrix']}",
        "by width: "
        + ", ".join(f"{w} px {b['correct']}/{b['n']}" for w, b in m["by_width"].items()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images",
        type=Path,
        action="append",
        required=True,
        help="an OCT2017 folder or an unsplit <CLASS>/ folder; repeat to pool several",
    )
    parser.add_argument("--set", default="{}", help="JSON overrides of REAL_DATA_DEFAULTS")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--official", action="store_true", help="also score train -> test")
    parser.add_argument("--log", action="store_true", help="log every training epoch")
    parser.add_argument("--out", type=Path, help="keep (and reuse) out-of-fold probabilities")
    parser.add_argument(
        "--train-share",
        type=float,
        default=1.0,
        help="train on this class-stratified share of the patients only (0 < S <= 1)",
    )
    args = parser.parse_args()
    if args.log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folders, overrides = [f.resolve() for f in args.images], json.loads(args.set)
    if args.official and not all(map(is_split, folders)):
        parser.error("--official needs every --images folder to have a train/test split")
    rows, files = list_images(folders)
    labels = [CLASSES.index(label) for _, label, _ in rows]
    patients = [patient for *_, patient in rows]
    folds = patient_folds(labels, patients, args.folds)
    if not 0 < args.train_share <= 1:
        parser.error("--train-share must be in (0, 1]")
    trainable = trained_patients(labels, patients, args.train_share)
    widths = scan_widths([files[rel] for rel, _, _ in rows])  # read once, not per seed
    print(f"{len(rows)} images, {args.folds} patient folds, recipe overrides {overrides}")
    if len(folders) > 1:  # a patient of two folders is one patient: one fold (by construction)
        sources: dict[str, set[str]] = {}
        for rel, _, patient in rows:
            sources.setdefault(patient, set()).add(rel.split("-", 1)[0])
        shared = {p for p, s in sources.items() if len(s) > 1}
        fold_sets = {
            p: {int(f) for f, q in zip(folds, patients, strict=True) if q == p} for p in shared
        }
        assert all(len(f) == 1 for f in fold_sets.values()), "a patient on both sides of a fold"
        print(
            f"{len(sources)} patients, {len(shared)} of them with scans in more than one folder "
            f"({sum(p in shared for p in patients)} scans), each patient in one fold",
            flush=True,
        )
    if args.train_share < 1:
        print(f"training on {trainable.sum()} of {len(rows)} scans' patients (--train-share)")
    run = (overrides, args.folds, rows) + ((args.train_share,) if args.train_share < 1 else ())
    key = hashlib.sha256(repr(run).encode()).hexdigest()[:10]  # as before at share 1
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recipe_cv_") as tmp:
        work = Path(tmp)
        by_seed: list[dict[str, np.ndarray]] = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            config = {**overrides, "seed": seed}
            probs: dict[str, np.ndarray] = {}
            for k in range(args.folds):
                kept = args.out / f"{key}-seed{seed}-fold{k}.csv" if args.out else None
                if kept is not None and kept.is_file():
                    probs.update(read_probs(kept))
                    print(f"seed {seed} fold {k}: reused {kept}", flush=True)
                    continue
                splits = [
                    "test" if f == k else "train" if keep else None
                    for f, keep in zip(folds, trainable, strict=True)
                ]
                sample = write_sample(work / f"s{seed}f{k}", files, rows, splits)
                m, p, secs = score(sample, config, work / f"s{seed}f{k}-out")
                probs.update(p)
                if kept is not None:
                    with open(kept.with_suffix(".tmp"), "w", newline="") as fh:
                        w = csv.writer(fh)
                        w.writerow(["file", *CLASSES])
                        w.writerows([f, *(f"{x:.6f}" for x in v)] for f, v in p.items())
                    kept.with_suffix(".tmp").rename(kept)
                print(
                    f"seed {seed} fold {k}: {m['accuracy']:.4f} on {len(p)} scans, trained on "
                    f"{splits.count('train')} ({secs:.0f} s)",
                    flush=True,
                )
            by_seed.append(probs)
            for line in pooled_report(rows, probs, widths):
                print(f"seed {seed} pooled: {line}", flush=True)
            if args.official:
                splits = [rel.split("/", 1)[0] for rel, _, _ in rows]
                sample = write_sample(work / f"s{seed}off", files, rows, splits)
                m, _, secs = score(sample, config, work / f"s{seed}off-out")
                lo, hi = m["accuracy_ci95"]
                print(
                    f"seed {seed} official test: {m['accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f}), "
                    f"per patient {m['patient_accuracy']:.4f}, {m['confusion_matrix']} "
                    f"({secs:.0f} s)",
                    flush=True,
                )

        if len(by_seed) > 1:
            for line in seed_agreement(rows, by_seed, widths):
                print(line, flush=True)


def trained_patients(labels: list[int], patients: list[str], share: float) -> np.ndarray:
    """Whether each row's patient may be trained on: all at share 1, else the patients of
    round(share * 20) of 20 class-stratified patient groups (dealt as the folds are, with
    another seed, so the kept share does not depend on the fold)."""
    if share >= 1:
        return np.ones(len(labels), dtype=bool)
    groups = patient_folds(labels, patients, TRAIN_SHARE_GROUPS, seed=FOLD_SEED + 1)
    return groups < max(1, round(share * TRAIN_SHARE_GROUPS))


def seed_agreement(
    rows: list[tuple[str, str, str]], by_seed: list[dict[str, np.ndarray]], widths: np.ndarray
) -> list[str]:
    """What averaging seeds could buy: the pooled figures of the seeds' mean probabilities, their
    gain over one seed's model with a paired patient-bootstrap interval, and the scans every seed
    gets wrong (errors that averaging seeds is unlikely to mend)."""
    true = np.array([CLASSES.index(label) for _, label, _ in rows])
    p = np.stack([[probs[rel] for rel, _, _ in rows] for probs in by_seed])  # seeds x scans x C
    wrong = (p.argmax(2) != true).all(0)
    ensemble = p.mean(0).argmax(1) == true
    single = (p.argmax(2) == true).mean(0)  # per scan: the share of seeds that read it right
    lo, hi = paired_gain_ci(ensemble.astype(float) - single, [patient for *_, patient in rows])
    lines = [
        f"{len(by_seed)} seeds averaged: accuracy {ensemble.mean():.4f}, one seed "
        f"{single.mean():.4f} on average: gain {ensemble.mean() - single.mean():+.4f} "
        f"(95% CI {lo:+.4f} to {hi:+.4f}, paired bootstrap over patients)",
        f"wrong for every seed: {wrong.sum()} scans",
    ]
    mean = {rel: p[:, i].mean(0) for i, (rel, _, _) in enumerate(rows)}
    lines[1:1] = [f"seeds averaged pooled: {line}" for line in pooled_report(rows, mean, widths)]
    lines += [
        f"  {rows[i][0]} ({widths[i]} px) read as "
        + ", ".join(sorted({CLASSES[c] for c in p[:, i].argmax(1)}))
        for i in np.flatnonzero(wrong)
    ]
    return lines


def paired_gain_ci(diff: np.ndarray, patients: list[str]) -> tuple[float, float]:
    """95% percentile interval of the mean of a per-scan difference (ensemble right minus the
    share of single models right), resampling whole patients, as `patient_bootstrap` does."""
    ids, owner = np.unique(np.asarray(patients), return_inverse=True)
    sums, counts = np.bincount(owner, diff), np.bincount(owner).astype(float)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, len(ids), size=(BOOTSTRAP_DRAWS, len(ids)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


if __name__ == "__main__":
    main()
