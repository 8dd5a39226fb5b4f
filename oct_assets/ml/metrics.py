"""Honest evaluation statistics in plain numpy: patient-level bootstrap intervals, one-vs-rest
ROC AUC and per-patient majority votes.

Scans of one patient are not independent (same eye, same scanner, often the same lesion), so
uncertainty is estimated by resampling patients, not scans: with ~80 test patients the interval
is wider than a scan-level one would claim, and that is the honest figure.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of `score` for the boolean `positive` labels.

    The Mann-Whitney form: the probability that a random positive scores above a random
    negative, ties counting one half (average ranks). None when either side is empty.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # start index of each run of equal values, and the mean rank of the run
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + 1 + ends) / 2
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def one_vs_rest_auc(true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Per-class ROC AUC of class c's probability for "is class c" against every other class."""
    return [roc_auc(true == c, probs[:, c]) for c in range(probs.shape[1])]


def patient_votes(
    true: np.ndarray, probs: np.ndarray, patients: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority vote over each patient's scans of one diagnosis.

    A group is a (patient, true class) pair: a few Kermany patients have scans of two classes
    (one eye CNV, the other drusen), and each diagnosis is scored on its own. A tie between
    predicted classes goes to the one with the larger summed probability, then to the lower
    class index, so the vote is deterministic.

    Returns:
        (group true class, group voted class, group patient id), groups sorted by patient id
        then class.
    """
    n_classes = probs.shape[1]
    pred = probs.argmax(1)
    keys = np.array([f"{p}\0{t}" for p, t in zip(patients, true, strict=True)])
    groups, owner = np.unique(keys, return_inverse=True)
    votes = np.zeros((len(groups), n_classes))
    np.add.at(votes, (owner, pred), 1.0)
    mass = np.zeros((len(groups), n_classes))
    np.add.at(mass, owner, probs)
    best = _vote(votes, mass)
    group_true = np.zeros(len(groups), dtype=np.int64)
    group_true[owner] = true
    group_patient = np.empty(len(groups), dtype=object)
    group_patient[owner] = patients
    return group_true, best, group_patient.astype(str)


def _vote(votes: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Most votes; among tied classes the most probability mass; then the lowest index."""
    top = votes == votes.max(axis=1, keepdims=True)
    return np.where(top, mass, -np.inf).argmax(axis=1)


def patient_bootstrap(
    true: np.ndarray,
    correct: np.ndarray,
    patients: np.ndarray,
    n_classes: int,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, list]:
    """95% percentile intervals of accuracy and per-class recall, resampling whole patients.

    Each draw picks as many patients as there are, with replacement, and keeps all their rows;
    the figures are recomputed on the draw. Seeded, so the same inputs give the same interval.

    Args:
        true: class index per row (scans, or patient votes).
        correct: whether each row was predicted right.
        patients: patient id per row.
        n_classes: number of classes.

    Returns:
        {"accuracy": [lo, hi], "recall": [[lo, hi] per class]} (a class absent from the rows
        gets None).
    """
    ids, owner = np.unique(patients, return_inverse=True)
    right = np.zeros((len(ids), n_classes))
    total = np.zeros((len(ids), n_classes))
    np.add.at(right, (owner, true), np.asarray(correct, dtype=np.float64))
    np.add.at(total, (owner, true), 1.0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ids), size=(draws, len(ids)))
    weights = np.zeros((draws, len(ids)))
    np.add.at(weights, (np.arange(draws)[:, None], picks), 1.0)
    right_d, total_d = weights @ right, weights @ total
    accuracy = right_d.sum(1) / total_d.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = right_d / total_d
    recall_ci = []
    for c in range(n_classes):
        col = recall[:, c][np.isfinite(recall[:, c])]
        recall_ci.append(_interval(col) if len(col) else None)
    return {"accuracy": _interval(accuracy), "recall": recall_ci}


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [round(float(lo), 5), round(float(hi), 5)]
