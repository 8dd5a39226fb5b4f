"""Score a training recipe on real scans the honest way: every image predicted by a model that
never saw its patient.

The images of an OCT2017 folder (train and test together) are split into k folds by patient,
stratified by class; for each fold a model trains on the others and predicts it. The pooled
accuracy over all images is a far steadier guide than one small test split, which is what a
recipe should be chosen on. `--official` also trains on the folder's own train split and scores
its test split, as `test_real_data.py` does. Uses only the public ML entry points (`train`,
`evaluate`), so it measures exactly what the assets run.

    .venv/bin/python scripts/recipe_cv.py --images ../shared/real_oct/OCT2017 \
        --set '{"epochs": 60}' --seeds 0,1 --official
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

from oct_assets.contracts.formats import CLASSES, PREDICTIONS_CSV, SPLITS, read_csv_rows
from oct_assets.ml.config import real_data_config
from oct_assets.ml.folds import patient_folds, pooled_figures, scan_widths
from oct_assets.ml.predict import evaluate
from oct_assets.ml.train import train


def list_images(images: Path) -> list[tuple[str, str, str]]:
    """(path relative to `images`, class, patient) of every scan, in a fixed order."""
    rows = []
    for split in SPLITS:
        for label in CLASSES:
            for f in sorted((images / split / label).glob("*.jpeg")):
                rows.append((f"{split}/{label}/{f.name}", label, f.name.split("-")[1]))
    return rows


def write_sample(dest: Path, images: Path, rows: list, splits: list[str]) -> Path:
    """A sample folder (images.csv + manifest.json, images symlinked) with the given splits."""
    dest.mkdir(parents=True)
    lines = [
        (rel, split, label, patient)
        for (rel, label, patient), split in zip(rows, splits, strict=True)
    ]
    for rel, *_ in lines:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((images / rel).resolve(), dest / rel)
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
    rows = read_csv_rows(work / "predictions" / PREDICTIONS_CSV)
    probs = {r["file"]: np.array([float(r[c]) for c in CLASSES]) for r in rows}
    return metrics, probs, time.perf_counter() - started


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
        "recall " + ", ".join(f"{c} {m['per_class'][c]['recall']:.3f}" for c in CLASSES),
        f"confusion (rows true {', '.join(CLASSES)}): {m['confusion_matrix']}",
        "by width: "
        + ", ".join(f"{w} px {b['correct']}/{b['n']}" for w, b in m["by_width"].items()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="an OCT2017 folder")
    parser.add_argument("--set", default="{}", help="JSON overrides of REAL_DATA_DEFAULTS")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--official", action="store_true", help="also score train -> test")
    parser.add_argument("--log", action="store_true", help="log every training epoch")
    args = parser.parse_args()
    if args.log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, overrides = args.images.resolve(), json.loads(args.set)
    rows = list_images(images)
    labels = [CLASSES.index(label) for _, label, _ in rows]
    folds = patient_folds(labels, [patient for *_, patient in rows], args.folds)
    widths = scan_widths([images / rel for rel, _, _ in rows])  # read once, not per seed
    print(f"{len(rows)} images, {args.folds} patient folds, recipe overrides {overrides}")
    with tempfile.TemporaryDirectory(prefix="recipe_cv_") as tmp:
        work = Path(tmp)
        by_seed: list[dict[str, np.ndarray]] = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            config = {**overrides, "seed": seed}
            probs: dict[str, np.ndarray] = {}
            for k in range(args.folds):
                splits = ["test" if f == k else "train" for f in folds]
                sample = write_sample(work / f"s{seed}f{k}", images, rows, splits)
                m, p, secs = score(sample, config, work / f"s{seed}f{k}-out")
                probs.update(p)
                print(f"seed {seed} fold {k}: {m['accuracy']:.4f} ({secs:.0f} s)", flush=True)
            by_seed.append(probs)
            for line in pooled_report(rows, probs, widths):
                print(f"seed {seed} pooled: {line}", flush=True)
            if args.official:
                splits = [rel.split("/", 1)[0] for rel, _, _ in rows]
                sample = write_sample(work / f"s{seed}off", images, rows, splits)
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


def seed_agreement(
    rows: list[tuple[str, str, str]], by_seed: list[dict[str, np.ndarray]], widths: np.ndarray
) -> list[str]:
    """What averaging seeds could buy: the pooled accuracy of the seeds' mean probabilities,
    and the scans every seed gets wrong (errors that averaging seeds is unlikely to mend)."""
    true = np.array([CLASSES.index(label) for _, label, _ in rows])
    p = np.stack([[probs[rel] for rel, _, _ in rows] for probs in by_seed])  # seeds x scans x C
    wrong = (p.argmax(2) != true).all(0)
    lines = [
        f"{len(by_seed)} seeds averaged: accuracy {(p.mean(0).argmax(1) == true).mean():.4f}",
        f"wrong for every seed: {wrong.sum()} scans",
    ]
    lines += [
        f"  {rows[i][0]} ({widths[i]} px) read as "
        + ", ".join(sorted({CLASSES[c] for c in p[:, i].argmax(1)}))
        for i in np.flatnonzero(wrong)
    ]
    return lines


if __name__ == "__main__":
    main()
