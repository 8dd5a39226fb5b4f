"""Compare recipes on the same scans: the out-of-fold probabilities `recipe_cv.py --out` kept,
paired scan by scan, with patient-bootstrap intervals on each difference.

Each `--run` is the prefix of one recipe's kept files (`DIR/<key>-seed<s>`, every
`-fold<k>.csv` of it is read); the first run is the baseline. Prints each run's pooled figures,
its paired difference to the baseline in accuracy and in each class's recall, and the figures of
all the runs' probabilities averaged (an ensemble of recipes or of seeds). The `--images` folders
must be the ones the runs were made on, in the same order (they name the scans).

    .venv/bin/python scripts/recipe_compare.py --images ../shared/real_oct/OCT2017 \
        --images ../shared/real_oct_more/scans \
        --run /tmp/study/preset/0123456789-seed0 --run /tmp/study/px224/abcdef0123-seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from recipe_cv import list_images, paired_gain_ci, pooled_report, read_probs

from oct_assets.contracts.formats import CLASSES
from oct_assets.ml.folds import scan_widths


def read_run(prefix: Path, names: list[str]) -> dict[str, np.ndarray]:
    """{scan: probabilities} from every fold file of a run; SystemExit naming a run that lacks
    some scan or has a fold file twice over."""
    files = sorted(prefix.parent.glob(f"{prefix.name}-fold*.csv"))
    if not files:
        raise SystemExit(f"{prefix}: no {prefix.name}-fold<k>.csv files")
    probs: dict[str, np.ndarray] = {}
    for f in files:
        fold = read_probs(f)
        if twice := probs.keys() & fold.keys():
            raise SystemExit(f"{f}: {min(twice)} is in another fold file too")
        probs.update(fold)
    missing = [n for n in names if n not in probs]
    if missing:
        raise SystemExit(f"{prefix}: {len(missing)} scans have no prediction, e.g. {missing[0]}")
    return probs


def paired_lines(
    true: np.ndarray, base: np.ndarray, other: np.ndarray, patients: np.ndarray
) -> list[str]:
    """`other` minus `base` (probabilities, scans x classes): accuracy and each class's recall,
    with 95% intervals resampling whole patients."""
    diff = (other.argmax(1) == true).astype(float) - (base.argmax(1) == true)
    lo, hi = paired_gain_ci(diff, list(patients))
    lines = [f"accuracy {diff.mean():+.4f} ({lo:+.4f} to {hi:+.4f})"]
    for c, name in enumerate(CLASSES):
        rows = true == c
        lo, hi = paired_gain_ci(diff[rows], list(patients[rows]))
        lines.append(f"{name} recall {diff[rows].mean():+.4f} ({lo:+.4f} to {hi:+.4f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, action="append", required=True)
    parser.add_argument("--run", type=Path, action="append", required=True)
    args = parser.parse_args()
    rows, files = list_images([f.resolve() for f in args.images])
    names = [rel for rel, _, _ in rows]
    true = np.array([CLASSES.index(label) for _, label, _ in rows])
    patients = np.array([patient for *_, patient in rows])
    widths = scan_widths([files[n] for n in names])
    runs = [read_run(p, names) for p in args.run]
    stacked = np.stack([[run[n] for n in names] for run in runs])  # runs x scans x classes
    for prefix, probs in zip(args.run, runs, strict=True):
        print(f"{prefix.parent.name}/{prefix.name}:")
        for line in pooled_report(rows, probs, widths):
            print(f"  {line}")
    for prefix, p in zip(args.run[1:], stacked[1:], strict=True):
        print(f"{prefix.parent.name} - {args.run[0].parent.name}, paired:")
        for line in paired_lines(true, stacked[0], p, patients):
            print(f"  {line}")
    if len(runs) > 1:
        mean = stacked.mean(0)
        print(f"the {len(runs)} runs averaged:")
        for line in pooled_report(rows, dict(zip(names, mean, strict=True)), widths):
            print(f"  {line}")
        print(f"averaged - {args.run[0].parent.name}, paired:")
        for line in paired_lines(true, stacked[0], mean, patients):
            print(f"  {line}")
        print(f"wrong for every run: {int((stacked.argmax(2) != true).all(0).sum())} scans")


if __name__ == "__main__":
    main()
