"""The salted graph through Dagster itself: materialise, cache hits, staleness, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    materialize,
    materialize_to_memory,
)
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.definitions import defs
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.resources import LOCAL_RESOURCES

RESOURCES = LOCAL_RESOURCES
FAST_TRAIN = {"epochs": 2, "image_size": 32, "batch_size": 16}


def run_config(sample: dict | None = None, train: dict | None = None) -> dict:
    ops = {
        "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3, **(sample or {})}},
        "trained_model": {"config": {**FAST_TRAIN, **(train or {})}},
    }
    return {"ops": ops}


def materialize_all(instance: DagsterInstance, **config: dict):
    return materialize(
        LOCAL_GRAPH,
        instance=instance,
        resources={**RESOURCES, "io_manager": LatestArtifactIOManager()},
        run_config=run_config(**config),
    )


def metadata(result, asset: str) -> dict:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def error_text(result, node: str) -> str:
    """The failure of `node` with its cause chain, as the run log shows it."""
    return result.failure_data_for_node(node).error.to_string()


def salts(result) -> dict[str, str]:
    return {a.key.path[-1]: metadata(result, a.key.path[-1])["salt"] for a in LOCAL_GRAPH}


def test_definitions_hold_the_graph() -> None:
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} >= {
        "raw_oct_images",
        "reduced_sample",
        "trained_model",
        "predictions",
    }


def test_whole_graph_in_memory(tiny_tree: Path, data_env: Path) -> None:
    result = materialize_to_memory(LOCAL_GRAPH, resources=RESOURCES, run_config=run_config())
    assert result.success
    raw = metadata(result, "raw_oct_images")
    assert raw["synthetic"] is True and raw["n_images"] == 48
    sample = metadata(result, "reduced_sample")
    assert sample["n_images"] == 4 * (6 + 3)
    model = metadata(result, "trained_model")
    assert Path(model["path"], "model.pt").is_file()
    assert model["epochs_run"] == 2  # reported by the training process through Pipes
    preds = metadata(result, "predictions")
    assert 0.0 <= preds["accuracy"] <= 1.0 and preds["n_images"] == 12
    assert "per_class" in preds and "confusion_matrix" in preds
    for name, salt in salts(result).items():
        folder = data_env / name / salt
        assert (folder / "manifest.json").is_file(), name
        assert metadata(result, name)["path"] == str(folder)
        assert result.asset_materializations_for_node(name)[0].tags["dagster/data_version"] == salt


def test_rerun_is_a_cache_hit_and_config_moves_downstream(tiny_tree: Path, data_env: Path) -> None:
    instance = DagsterInstance.ephemeral()
    first = materialize_all(instance)
    model_pt = Path(metadata(first, "trained_model")["path"]) / "model.pt"
    mtime = model_pt.stat().st_mtime_ns

    again = materialize_all(instance)
    assert salts(again) == salts(first)
    assert all(metadata(again, a.key.path[-1])["cache_hit"] for a in LOCAL_GRAPH)
    assert model_pt.stat().st_mtime_ns == mtime

    reseeded = materialize_all(instance, sample={"seed": 1})
    before, after = salts(first), salts(reseeded)
    assert after["raw_oct_images"] == before["raw_oct_images"]
    for name in ("reduced_sample", "trained_model", "predictions"):
        assert after[name] != before[name], name

    retrained = materialize_all(instance, sample={"seed": 1}, train={"seed": 5})
    assert salts(retrained)["reduced_sample"] == after["reduced_sample"]
    assert salts(retrained)["trained_model"] != after["trained_model"]


def test_changed_upstream_marks_downstream_stale(tiny_tree: Path, data_env: Path) -> None:
    instance = DagsterInstance.ephemeral()
    materialize_all(instance)

    def status(key: str) -> StaleStatus:
        return get_stale_status_resolver(instance, LOCAL_GRAPH).get_status(AssetKey(key))

    assert status("trained_model") == StaleStatus.FRESH
    materialize(
        LOCAL_GRAPH,
        selection=["reduced_sample"],
        instance=instance,
        resources={**RESOURCES, "io_manager": LatestArtifactIOManager()},
        run_config={
            "ops": {"reduced_sample": run_config(sample={"seed": 3})["ops"]["reduced_sample"]}
        },
    )
    assert status("trained_model") == StaleStatus.STALE
    assert status("predictions") == StaleStatus.STALE


def test_separate_cli_process_finds_outputs(tiny_tree: Path, data_env: Path) -> None:
    """`dagster asset materialize --select trained_model` in a fresh process is a cache hit."""
    materialize(
        LOCAL_GRAPH[:3],
        instance=DagsterInstance.ephemeral(),
        resources={**RESOURCES, "io_manager": LatestArtifactIOManager()},
        run_config=run_config(),
    )
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    cli = Path(sys.executable).with_name("dagster")
    config = json.dumps({"ops": {"trained_model": {"config": FAST_TRAIN}}})
    command = [str(cli), "asset", "materialize", "-m", "oct_assets.definitions"]
    proc = subprocess.run(
        [*command, "--select", "trained_model", "--config-json", config],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cache hit: trained_model" in proc.stderr


def test_out_of_range_config_names_the_field(tiny_tree: Path, data_env: Path) -> None:
    with pytest.raises(Exception, match="train_per_class"):
        materialize_to_memory(
            LOCAL_GRAPH[:2],
            run_config={"ops": {"reduced_sample": {"config": {"train_per_class": 0}}}},
        )


def test_corrupt_image_fails_the_sample_by_path(tiny_tree: Path, data_env: Path) -> None:
    bad = sorted((tiny_tree / "test" / "DRUSEN").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:500])
    result = materialize_to_memory(
        LOCAL_GRAPH[:2],
        run_config={
            "ops": {
                "reduced_sample": run_config(sample={"test_per_class": None})["ops"][
                    "reduced_sample"
                ]
            }
        },
        raise_on_error=False,
    )
    assert not result.success
    message = error_text(result, "reduced_sample")
    assert str(bad) in message and "end-of-image marker" in message
    assert not (data_env / "reduced_sample").exists() or not any(
        (p / "manifest.json").exists() for p in (data_env / "reduced_sample").iterdir()
    )


def test_explicit_missing_image_root_is_an_error(
    data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no_such_images"
    monkeypatch.setenv("OCT_IMAGES_DIR", str(missing))
    result = materialize_to_memory(LOCAL_GRAPH[:1], raise_on_error=False)
    assert not result.success
    assert f"image root {missing} does not exist" in error_text(result, "raw_oct_images")
    assert not missing.exists()


def test_bad_training_setting_names_the_field(tiny_tree: Path, data_env: Path) -> None:
    result = materialize_to_memory(
        LOCAL_GRAPH[:3],
        resources=RESOURCES,
        run_config=run_config(train={"epochs": 0}),
        raise_on_error=False,
    )
    assert not result.success
    text = error_text(result, "trained_model")
    assert "epochs" in text and "greater than or equal to 1" in text
    assert not (data_env / "trained_model").exists()


def test_cpu_bf16_is_trained_and_salted_as_float32_on_a_cpu_without_bf16(
    tiny_tree: Path, data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emulated bf16 is ~17x slower than float32: where the CPU lacks bf16 instructions the
    graph trains float32 and salts what ran, so the salt is float32's, a cache hit of it."""
    instance = DagsterInstance.ephemeral()
    monkeypatch.setattr("oct_assets.ml.config.cpu_has_bf16", lambda: False)
    fp32 = materialize_all(instance, train={"cpu_bf16": False})
    asked_bf16 = materialize_all(instance, train={"cpu_bf16": True})
    model = metadata(asked_bf16, "trained_model")
    assert model["salt"] == metadata(fp32, "trained_model")["salt"] and model["cache_hit"]
    assert model["config"]["cpu_bf16"] is False
    warned = [e.message for e in instance.all_logs(asked_bf16.run_id) if e.message]
    assert any("no bf16 instructions" in m and "float32" in m for m in warned)
    monkeypatch.setattr("oct_assets.ml.config.cpu_has_bf16", lambda: True)
    native = materialize_all(instance, train={"cpu_bf16": True})
    model = metadata(native, "trained_model")
    assert model["salt"] != metadata(fp32, "trained_model")["salt"]
    assert model["config"]["cpu_bf16"] is True
