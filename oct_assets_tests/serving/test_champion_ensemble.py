"""The cross-validated ensemble as a champion: promoted by the same rule, then it diagnoses the
inbox and answers `python -m oct_assets predict`."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.champion import champion_model
from oct_assets.assets.cv import FOLDS
from oct_assets.assets.graph import CROSS_VALIDATION, LOCAL_GRAPH
from oct_assets.assets.inbox import inbox_predictions
from oct_assets.contracts.formats import CLASSES
from oct_assets.dataset.synthetic import make_synthetic_oct2017
from oct_assets.serving.champion import read_current
from oct_assets_tests.serving.conftest import RESOURCES
from oct_assets_tests.serving.test_champion import _set_local_accuracy

TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "val_fraction": 0.0}


def test_the_ensemble_wins_and_serves(
    data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = make_synthetic_oct2017(tmp_path / "images" / "OCT2017", FOLDS, 1, 1)
    monkeypatch.setenv("OCT_IMAGES_DIR", str(images))
    instance = DagsterInstance.ephemeral()
    graph = [*LOCAL_GRAPH, *CROSS_VALIDATION, champion_model, inbox_predictions]
    sample = {"train_per_class": None, "test_per_class": None}
    built = materialize(
        graph,
        selection=[*LOCAL_GRAPH, *CROSS_VALIDATION],
        instance=instance,
        resources=RESOURCES,
        run_config={
            "ops": {
                "reduced_sample": {"config": sample},
                "trained_model": {"config": TINY},
                "ensemble_model": {"config": TINY},
            }
        },
    )
    assert built.success
    _set_local_accuracy(data_env, 0.0)  # the single model is out of the race
    promoted = materialize(
        graph,
        selection=[champion_model],
        instance=instance,
        resources=RESOURCES,
        run_config={"ops": {"champion_model": {"config": {"accuracy_floor": 0.0}}}},
    )
    assert promoted.success
    _, info = read_current(data_env / "champion_model")
    assert info["model"]["model_asset"] == "ensemble_model"
    assert info["model"]["evaluation_asset"] == "ensemble_predictions"

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    scan = sorted((images / "test").rglob("*.jpeg"))[0]
    (inbox / "new.jpeg").write_bytes(scan.read_bytes())
    monkeypatch.setenv("OCT_INBOX_DIR", str(inbox))
    scored = materialize(
        graph, selection=[inbox_predictions], instance=instance, resources=RESOURCES
    )
    [event] = scored.get_asset_materialization_events()
    table = Path(str(event.materialization.metadata["predictions_csv"].value))
    with open(table, newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["predicted_class"] and row["model_salt"] == info["model"]["model_salt"]

    desk = subprocess.run(
        [sys.executable, "-m", "oct_assets", "predict", str(inbox / "new.jpeg")],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert desk.returncode == 0, desk.stderr[-2000:]
    assert f"{row['predicted_class']}  (" in desk.stdout
    assert abs(sum(float(row[c]) for c in CLASSES) - 1) < 1e-4
