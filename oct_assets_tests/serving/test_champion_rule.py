"""The promotion rule on its own: better promoted, worse and below-floor kept out, other splits
refused."""

from dataclasses import replace

from oct_assets.serving.champion import Candidate, decide

LOCAL = Candidate(
    model_asset="trained_model",
    model_salt="m-local",
    model_dir="trained_model/m-local",
    sample_salt="s1",
    evaluation_asset="predictions",
    evaluation_salt="e-local",
    accuracy=0.80,
    macro_f1=0.79,
)
CLUSTER = replace(
    LOCAL,
    model_asset="cluster_model",
    model_salt="m-cluster",
    model_dir="cluster_model/m-cluster",
    evaluation_asset="cluster_predictions",
    evaluation_salt="e-cluster",
)


def test_first_champion_is_the_best_candidate_above_the_floor() -> None:
    better = replace(CLUSTER, accuracy=0.9)
    d = decide([LOCAL, better], None, accuracy_floor=0.5)
    assert d.promoted and d.champion == better


def test_better_candidate_replaces_the_champion() -> None:
    better = replace(CLUSTER, accuracy=0.85)
    d = decide([LOCAL, better], current=LOCAL, accuracy_floor=0.5)
    assert d.promoted and d.champion == better
    assert "promoted" in d.reasons[-1]


def test_worse_candidate_is_kept_out() -> None:
    champion = replace(CLUSTER, accuracy=0.9)
    d = decide([LOCAL], current=champion, accuracy_floor=0.5)
    assert not d.promoted and d.champion == champion
    assert "worse than the champion" in d.reasons[-1]


def test_candidate_below_the_floor_is_kept_out_even_without_a_champion() -> None:
    d = decide([LOCAL], None, accuracy_floor=0.9)
    assert d.champion is None and not d.promoted
    assert any("below the floor" in r for r in d.reasons)


def test_candidate_on_another_test_split_is_refused() -> None:
    other_split = replace(CLUSTER, sample_salt="s2", accuracy=0.99)
    d = decide([LOCAL, other_split], current=LOCAL, accuracy_floor=0.5)
    assert d.champion == LOCAL and not d.promoted
    assert any("refused" in r and "s2" in r for r in d.reasons)


def test_same_model_again_is_no_promotion() -> None:
    d = decide([LOCAL], current=LOCAL, accuracy_floor=0.5)
    assert d.champion == LOCAL and not d.promoted
