"""Compare recipes on the same scans: the out-of-fold probabilities `recipe_cv.py --out` kept,
paired scan by scan, with patient-bootstrap intervals on each difference.

Each `--run` is one recipe's kept files: `DIR/<key>` for all its seeds (every
`<key>-seed<s>-fold<k>.csv`), or `DIR/<key>-seed<s>` for one. The first run is the baseline.
Prints each run's pooled figures per seed and, with several seeds, what `recipe_cv.py` prints
of them (the seeds' probabilities averaged, its gain over one model, the scans every seed gets
wrong); then each run against the baseline, paired, in accuracy
and in each class's recall: one model against one model (each scan's share of seeds that read it
right, so the seeds' noise averages out and the interval is the recipe's), and ensemble against
ensemble. The `--images` folders must be the ones the runs were made on, in the same order.

    .venv/bin/python scripts/recipe_compare.py --images ../shared/real_oct/OCT2017 \
        --images ../shared/real_oct_more/scans \
        --run /tmp/study/preset/0123456789 --run /tmp/study/px224/abcdef0123
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from recipe_cv import list_images, paired_gain_ci, pooled_report, read_probs, seed_agreement

from oct_assets.contracts.formats import CLASSES
from oct_assets.ml.folds import scan_widths


@dataclass(frozen=True)
class Run:
    """One recipe's out-of-fold probabilities: seeds x scans x classes, scans in `names` order."""

    name: str
    seeds: list[int]
    probs: np.ndarray

    def correct(self, true: np.ndarray) -> np.ndarray:
        """Per scan, the share of this run's seeds whose model read it right."""
        return (self.probs.argmax(2) == true).mean(0)

    def ensemble(self) -> np.ndarray:
        return self.probs.mean(0)


def read_seed(files: list[Path], names: list[str]) -> np.ndarray:
    """One seed's fold files as scans x classes; SystemExit naming a scan that is missing or in
    two fold files."""
    probs: dict[str, np.ndarray] = {}
    for f in files:
        fold = read_probs(f)
        if twice := probs.keys() & fold.keys():
            raise SystemExit(f"{f}: {min(twice)} is in another fold file too")
        probs.update(fold)
    if missing := [n for n in names if n not in probs]:
        raise SystemExit(f"{files[0]}: {len(missing)} scans have no prediction, e.g. {missing[0]}")
    return np.stack([probs[n] for n in names])


def read_run(prefix: Path, names: list[str]) -> Run:
    """The kept files of `prefix` (`DIR/<key>` or `DIR/<key>-seed<s>`), grouped by seed."""
    kept = re.compile(rf"{re.escape(prefix.name)}(?:-seed(\d+))?-fold\d+\.csv")
    one_seed = re.search(r"-seed(\d+)$", prefix.name)
    by_seed: dict[int, list[Path]] = {}
    for f in sorted(prefix.parent.glob("*.csv")):
        if (m := kept.fullmatch(f.name)) and (m[1] or one_seed):
            by_seed.setdefault(int(m[1] or one_seed[1]), []).append(f)
    if not by_seed:
        raise SystemExit(f"{prefix}: no {prefix.name}[-seed<s>]-fold<k>.csv files")
    seeds = sorted(by_seed)
    name = f"{prefix.parent.name}/{prefix.name}"
    return Run(name, seeds, np.stack([read_seed(by_seed[s], names) for s in seeds]))


def paired_lines(true: np.ndarray, diff: np.ndarray, patients: np.ndarray) -> list[str]:
    """A per-scan difference in correctness (`diff`, other minus baseline) as accuracy and each
    class's recall, with 95% intervals resampling whole patients."""
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
    for run in runs:
        print(f"{run.name}:")
        for seed, probs in zip(run.seeds, run.probs, strict=True):
            for line in pooled_report(rows, dict(zip(names, probs, strict=True)), widths):
                print(f"  seed {seed}: {line}")
        if len(run.seeds) > 1:
            by_seed = [dict(zip(names, probs, strict=True)) for probs in run.probs]
            for line in seed_agreement(rows, by_seed, widths):
                print(f"  {line}")
    base = runs[0]
    for run in runs[1:]:
        print(f"{run.name} - {base.name}, paired, one model (seeds {run.seeds} - {base.seeds}):")
        for line in paired_lines(true, run.correct(true) - base.correct(true), patients):
            print(f"  {line}")
        if len(run.seeds) > 1 or len(base.seeds) > 1:
            diff = (run.ensemble().argmax(1) == true).astype(float) - (
                base.ensemble().argmax(1) == true
            )
            print(f"{run.name} - {base.name}, paired, the seeds' ensembles:")
            for line in paired_lines(true, diff, patients):
                print(f"  {line}")


if __name__ == "__main__":
    main()
