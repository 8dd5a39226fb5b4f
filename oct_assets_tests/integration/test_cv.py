"""Cross-validation through Dagster: the ensemble path (no partition option), the `cv_model`
partitions reusing its folders, the report and the label audit, and the preset's CLI command."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, materialize, validate_run_config

from oct_assets.assets.cv import CV_MODEL, FOLD_KEYS, FOLDS, cv_model
from oct_assets.assets.graph import CROSS_VALIDATION, LOCAL_GRAPH
from oct_assets.contracts.formats import METRICS_JSON
from oct_assets.dataset.synthetic import make_synthetic_oct2017
from oct_assets.definitions import defs
from oct_assets.ml.config import TrainConfig, real_data_config
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets.serving.card import model_card_md
from oct_assets.serving.export import export_difference, export_torchscript
from oct_assets_tests.fixtures_ml import REPO
from oct_assets_tests.resources import LOCAL_RESOURCES

TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "val_fraction": 0.0}
SAMPLE = {"train_per_class": None, "test_per_class": None}
RESOURCES = {**LOCAL_RESOURCES, "io_manager": LatestArtifactIOManager()}


@pytest.fixture
def cv_tree(data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tree with as many train patients per class as folds (one scan each)."""
    root = make_synthetic_oct2017(tmp_path / "images" / "OCT2017", FOLDS, 1, 1)
    monkeypatch.setenv("OCT_IMAGES_DIR", str(root))
    return root


def meta(result, asset: str) -> list[dict]:
    return [
        {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == asset
    ]


def cv_config(extra_seeds: list[int] | None = None) -> dict:
    return {
        "ops": {
            "reduced_sample": {"config": SAMPLE},
            "ensemble_model": {"config": {**TINY, "extra_seeds": extra_seeds or []}},
        }
    }


def test_ensemble_report_audit_and_partitions(cv_tree: Path, data_env: Path) -> None:
    instance = DagsterInstance.ephemeral()
    graph = [*LOCAL_GRAPH[:2], *CROSS_VALIDATION]
    first = materialize(graph, instance=instance, resources=RESOURCES, run_config=cv_config())
    assert first.success
    [ens] = meta(first, "ensemble_model")
    assert ens["n_members"] == FOLDS and not ens["cache_hit"]
    assert instance.get_materialized_partitions(cv_model.key) == set(FOLD_KEYS)
    [pred] = meta(first, "ensemble_predictions")
    metrics = json.loads((Path(str(pred["path"])) / METRICS_JSON).read_text())
    assert set(metrics) >= {"accuracy", "accuracy_ci95", "patient_accuracy", "per_class"}

    # Every train scan has exactly one out-of-fold prediction.
    [report] = meta(first, "cv_report")
    with open(Path(str(report["path"])) / "oof_predictions.csv", newline="") as fh:
        oof = list(csv.DictReader(fh))
    assert report["n_images"] == len(oof) == 4 * FOLDS
    assert "train scans every seed gets wrong" in report["wrong_for_every_seed"]
    assert len({r["file"] for r in oof}) == len(oof)
    assert {int(r["fold"]) for r in oof} == set(range(FOLDS))
    [audit] = meta(first, "label_audit")
    assert (Path(str(audit["path"])) / "label_audit.csv").is_file()

    # What the champion does with a model folder works on the ensemble: card, export, check.
    model = {
        "model_asset": "ensemble_model",
        "model_salt": ens["salt"],
        "model_dir": f"ensemble_model/{ens['salt']}",
        "sample_salt": pred["upstream_salts"]["reduced_sample"],
        "evaluation_asset": "ensemble_predictions",
        "evaluation_salt": pred["salt"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
    }
    assert "ensemble of 5" in model_card_md(data_env, model, {"accuracy_floor": 0.5})
    export_torchscript(data_env / model["model_dir"], data_env / "model.ts")
    sample_dir = data_env / "reduced_sample" / model["sample_salt"]
    check = export_difference(data_env / model["model_dir"], data_env / "model.ts", sample_dir)
    assert check["max_abs_diff"] < 1e-5, check

    # Another seed: the first seed's fold models are reused, new ones trained.
    second = materialize(
        graph[:3], instance=instance, resources=RESOURCES, run_config=cv_config([7])
    )
    [ens2] = meta(second, "ensemble_model")
    assert ens2["n_members"] == 2 * FOLDS and ens2["salt"] != ens["salt"]
    table = str(ens2["members"])
    assert table.count("| True |") == FOLDS and table.count("| False |") == FOLDS

    # The partitions are the same folders: a backfill of every fold is one run of cache hits.
    folds = materialize(
        [*LOCAL_GRAPH[:2], cv_model],
        instance=instance,
        resources=RESOURCES,
        selection=[cv_model.key],
        run_config={"ops": {CV_MODEL: {"config": TINY}}},
        tags={
            "dagster/asset_partition_range_start": FOLD_KEYS[0],
            "dagster/asset_partition_range_end": FOLD_KEYS[-1],
        },
    )
    events = meta(folds, CV_MODEL)
    assert len(events) == FOLDS
    assert events[0]["cache_hits"] == FOLDS
    one = materialize(
        [*LOCAL_GRAPH[:2], cv_model],
        instance=instance,
        resources=RESOURCES,
        selection=[cv_model.key],
        partition_key=FOLD_KEYS[2],
        run_config={"ops": {CV_MODEL: {"config": {**TINY, "seed": 7}}}},
    )
    [fold2] = meta(one, CV_MODEL)
    assert fold2["cache_hits"] == 1 and fold2["salt"] in table


def test_preset_is_the_real_data_recipe_and_valid_for_its_selection() -> None:
    preset = yaml.safe_load((REPO / "oct_assets" / "presets" / "real_data_cv.yaml").read_text())
    config = dict(preset["ops"]["ensemble_model"]["config"])
    assert config.pop("extra_seeds") == []
    assert TrainConfig.from_dict(config) == real_data_config()
    job = defs.resolve_implicit_global_asset_job_def()
    validate_run_config(job, preset)


def test_preset_command(cv_tree: Path, data_env: Path, tmp_path: Path) -> None:
    """The preset's command with a tiny config: `--select '*ensemble_predictions'`, no
    partition option."""
    config = tmp_path / "tiny_cv.yaml"
    config.write_text(json.dumps(cv_config()))  # JSON is YAML
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "oct_assets.definitions",
            "--select",
            "*ensemble_predictions",
            "-c",
            str(config),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [folder] = [p for p in (data_env / "ensemble_predictions").iterdir() if p.is_dir()]
    assert (folder / METRICS_JSON).is_file()
    assert len([p for p in (data_env / CV_MODEL).iterdir() if p.is_dir()]) == FOLDS
