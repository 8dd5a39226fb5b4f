"""Patient-level bootstrap intervals, ROC AUC and per-patient votes (oct_assets.ml.metrics)."""

import numpy as np
import pytest

from oct_assets.ml.metrics import one_vs_rest_auc, patient_bootstrap, patient_votes, roc_auc
from oct_assets.ml.predict import classification_metrics, with_uncertainty


def test_auc_on_known_cases():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    # positives 0.35, 0.8 against negatives 0.1, 0.4: pairs won 1 + 2 of 4
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.35, 0.4, 0.8])) == 0.75
    # a tie counts one half: positive 0.5 vs negatives 0.5 and 0.2
    assert roc_auc(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.2])) == 0.75
    assert roc_auc(np.array([1, 1]), np.array([0.3, 0.4])) is None  # no negatives


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200).astype(bool)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounded: many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_one_vs_rest_auc_per_class():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    true = np.array([0, 1, 2, 1])
    aucs = one_vs_rest_auc(true, probs)
    assert aucs[0] == 1.0 and aucs[2] == 1.0
    assert aucs[1] == 1.0  # class 1 rows score 0.7, 0.4; others 0.1, 0.3
    assert one_vs_rest_auc(np.array([0, 0]), np.array([[0.9, 0.1], [0.6, 0.4]]))[1] is None


def test_majority_vote_per_patient_and_ties():
    # patient a: 2 votes class 1, 1 vote class 0 -> 1; patient b: tie 0 vs 2, more mass on 2
    probs = np.array(
        [
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.9, 0.05, 0.05],
            [0.5, 0.0, 0.5 - 1e-9],
            [0.3, 0.0, 0.7],
            [0.6, 0.4, 0.0],  # patient c, scanned for another diagnosis too
            [0.4, 0.0, 0.6],
        ]
    )
    true = np.array([1, 1, 1, 2, 2, 0, 2])
    patients = np.array(["a", "a", "a", "b", "b", "c", "c"])
    g_true, g_vote, g_patient = patient_votes(true, probs, patients)
    assert list(g_patient) == ["a", "b", "c", "c"]  # c counts once per diagnosis
    assert list(g_true) == [1, 2, 0, 2]
    assert list(g_vote) == [1, 2, 0, 2]
    # an exact tie in votes and mass goes to the lower class index, every time
    tie = np.array([[0.6, 0.4], [0.4, 0.6]])
    assert list(patient_votes(np.array([1, 1]), tie, np.array(["p", "p"]))[1]) == [0]


def _scores(n_patients: int, scans_each: int, seed: int):
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], scans_each)
    true = np.repeat(rng.integers(0, 4, n_patients), scans_each)
    correct = rng.random(len(true)) < 0.9
    return true, correct, patients


def test_bootstrap_contains_point_estimate_and_narrows_with_more_patients():
    widths = []
    for n in (20, 80, 320):
        true, correct, patients = _scores(n, 3, seed=n)
        ci = patient_bootstrap(true, correct, patients, 4)
        lo, hi = ci["accuracy"]
        assert lo <= correct.mean() <= hi
        for c in range(4):
            recall = correct[true == c].mean()
            assert ci["recall"][c][0] <= recall <= ci["recall"][c][1]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_resamples_patients_not_scans():
    # every patient all right or all wrong: scans of one patient move together, so the
    # interval must be as wide as for one scan per patient, not sqrt(10) narrower
    rng = np.random.default_rng(0)
    per_patient = rng.random(60) < 0.8
    one = patient_bootstrap(np.zeros(60, int), per_patient, np.arange(60).astype(str), 1)
    many = patient_bootstrap(
        np.zeros(600, int), np.repeat(per_patient, 10), np.repeat(np.arange(60), 10).astype(str), 1
    )
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]  # noqa: E731
    assert width(many) == pytest.approx(width(one), abs=0.02)


def test_bootstrap_is_deterministic_and_tolerates_an_absent_class():
    true, correct, patients = _scores(30, 2, seed=3)
    true[true == 3] = 2
    a = patient_bootstrap(true, correct, patients, 4)
    assert a == patient_bootstrap(true, correct, patients, 4)
    assert a["recall"][3] is None


def test_with_uncertainty_adds_intervals_auc_and_patient_accuracy():
    true = np.array([0, 0, 1, 1, 2, 3])
    probs = np.eye(4)[[0, 1, 1, 1, 2, 3]] * 0.7 + 0.075
    patients = np.array(["a", "a", "b", "c", "d", "e"])
    classes = ["CNV", "DME", "DRUSEN", "NORMAL"]
    m = with_uncertainty(
        classification_metrics(true, probs.argmax(1), classes), true, probs, patients
    )
    assert m["accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
    # patient a votes 1 CNV, 1 DME: tie on votes and mass -> lower index, CNV, right
    assert m["patient_accuracy"] == 1.0 and m["n_patients"] == 5
    assert m["per_class"]["DRUSEN"]["roc_auc"] == 1.0
    assert set(m["per_class"]["CNV"]) >= {"precision", "recall", "recall_ci95", "roc_auc"}
    assert m["bootstrap"]["unit"] == "patient"
