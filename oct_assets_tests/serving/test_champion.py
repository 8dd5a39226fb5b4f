"""`champion_model` through Dagster: the first champion, then cluster evaluations that are
better, worse, or on another test split."""

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from dagster import AssetMaterialization, DagsterInstance, MetadataValue, materialize

from oct_assets.assets import champion as champion_assets
from oct_assets.assets.champion import champion_model
from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.contracts.errors import DamagedFileError
from oct_assets.serving.champion import CHAMPION_JSON, read_current
from oct_assets_tests.serving.conftest import RESOURCES


def materialise_champion(instance: DagsterInstance, **config) -> dict:
    result = materialize(
        [*LOCAL_GRAPH, champion_model],
        selection=[champion_model],
        instance=instance,
        resources=RESOURCES,
        run_config={"ops": {"champion_model": {"config": config}}} if config else None,
        raise_on_error=False,
    )
    assert result.success, result.all_events
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def fake_cluster_evaluation(
    data: Path, instance: DagsterInstance, name: str, accuracy: float, sample: str | None = None
) -> str:
    """A `cluster_model` (a copy of the trained model) and its `cluster_predictions` with the
    given accuracy, recorded in the instance as the latest `cluster_predictions`."""
    [local] = [p for p in (data / "predictions").iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((local / "manifest.json").read_text())
    model_salt = f"cm-{name}"
    shutil.copytree(
        data / "trained_model" / manifest["upstream"]["model"], data / "cluster_model" / model_salt
    )
    folder = data / "cluster_predictions" / f"cp-{name}"
    shutil.copytree(local, folder)
    manifest.update(asset="cluster_predictions", salt=f"cp-{name}")
    manifest["upstream"]["model"] = model_salt
    manifest["upstream"]["reduced_sample"] = sample or manifest["upstream"]["reduced_sample"]
    manifest["metrics"] = {**manifest["metrics"], "accuracy": accuracy}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    instance.report_runless_asset_event(
        AssetMaterialization(
            "cluster_predictions", metadata={"path": MetadataValue.path(str(folder))}
        )
    )
    return model_salt


def test_promotion_through_dagster(trained: Path) -> None:
    instance = DagsterInstance.ephemeral()
    first = materialise_champion(instance, accuracy_floor=0.0)
    assert first["promoted"] is True and first["model_asset"] == "trained_model"
    assert "cluster_predictions: no complete materialisation" in first["why"]
    folder, info = read_current(trained / "champion_model")
    assert Path(first["path"]) == folder and info["model"]["model_salt"] == first["model_salt"]
    local_accuracy = first["accuracy"]

    # The folder holds the model card and a TorchScript export that agrees with the loader.
    card = (folder / "model_card.md").read_text()
    for part in (
        "## Data",
        "SYNTHETIC",
        "## Recipe",
        "95% CI",
        "Confusion matrix",
        "NORMAL",
        "## Lineage",
        "raw_oct_images",
        "not a medical device",
        "cam_grid.png",
    ):
        assert part in card, part
    assert (folder / "cam_grid.png").is_file() and (folder / "model.ts").is_file()
    assert first["export_max_abs_diff"] < 1e-5
    assert "## Intended use" in first["model_card"]

    # A better cluster model on the same split is promoted; the salt follows the model.
    better = fake_cluster_evaluation(trained, instance, "better", local_accuracy + 0.01)
    promoted = materialise_champion(instance, accuracy_floor=0.0)
    assert promoted["promoted"] is True and promoted["model_salt"] == better
    assert promoted["salt"] != first["salt"]
    assert (
        json.loads((Path(promoted["path"]) / CHAMPION_JSON).read_text())["model"]["model_asset"]
        == "cluster_model"
    )

    # A worse one is kept out: the champion stays, a cache hit, and the metadata says why.
    fake_cluster_evaluation(trained, instance, "worse", local_accuracy - 0.5)
    kept = materialise_champion(instance, accuracy_floor=0.0)
    assert kept["promoted"] is False and kept["model_salt"] == better
    assert kept["salt"] == promoted["salt"] and kept["cache_hit"] is True
    assert "stays" in kept["why"]

    # One scored on another test split is refused, however good.
    fake_cluster_evaluation(trained, instance, "other", 1.0, sample="another-sample")
    refused = materialise_champion(instance, accuracy_floor=0.0)
    assert refused["model_salt"] == better and "scores on different splits" in refused["why"]

    # A floor above every candidate: nothing is promoted, the champion stays.
    high = materialise_champion(instance, accuracy_floor=1.0)
    assert high["promoted"] is False and high["model_salt"] == better
    assert "below the floor" in high["why"]


def test_no_eligible_candidate_and_no_champion_fails_saying_why(trained: Path) -> None:
    result = materialize(
        [*LOCAL_GRAPH, champion_model],
        selection=[champion_model],
        instance=DagsterInstance.ephemeral(),
        resources=RESOURCES,
        run_config={"ops": {"champion_model": {"config": {"accuracy_floor": 1.0}}}},
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("champion_model").error.to_string()
    assert "no champion" in error and "below the floor" in error
    assert read_current(trained / "champion_model") is None


def _set_local_accuracy(data: Path, accuracy: float) -> None:
    """Give the local evaluation another accuracy (this test's copy of the data folder)."""
    [local] = [p for p in (data / "predictions").iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["metrics"]["accuracy"] = accuracy
    (local / "manifest.json").write_text(json.dumps(manifest))


def test_concurrent_promotions_end_on_the_better_model(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promotion B (0.900) reads the 0.875 champion and is slow to decide; promotion A (0.975)
    starts meanwhile. Whatever the order of their writes, the 0.975 model ends as champion."""
    _set_local_accuracy(trained, 0.875)
    materialise_champion(DagsterInstance.ephemeral(), accuracy_floor=0.0)
    instances = {"a": DagsterInstance.ephemeral(), "b": DagsterInstance.ephemeral()}
    models = {
        "a": fake_cluster_evaluation(trained, instances["a"], "a", 0.975),
        "b": fake_cluster_evaluation(trained, instances["b"], "b", 0.900),
    }
    b_deciding = threading.Event()
    original = champion_assets.decide

    def slow_for_b(*args, **kwargs):
        if threading.current_thread().name == "b":
            b_deciding.set()
            time.sleep(4)  # without the lock, A reads, decides and writes in this time
        return original(*args, **kwargs)

    monkeypatch.setattr(champion_assets, "decide", slow_for_b)
    results: dict[str, dict] = {}

    def promote(name: str) -> None:
        try:
            with instances[name] as instance:  # disposed in the thread that used it
                results[name] = materialise_champion(instance, accuracy_floor=0.0)
        finally:
            b_deciding.set()

    threads = {n: threading.Thread(target=promote, args=(n,), name=n) for n in ("b", "a")}
    threads["b"].start()
    assert b_deciding.wait(300)
    threads["a"].start()
    for t in threads.values():
        t.join(300)
    assert set(results) == {"a", "b"}
    _, info = read_current(trained / "champion_model")
    assert info["model"]["model_salt"] == models["a"]
    assert info["model"]["accuracy"] == 0.975


def test_a_pointer_to_a_missing_champion_is_an_error_not_a_first_champion(trained: Path) -> None:
    materialise_champion(DagsterInstance.ephemeral(), accuracy_floor=0.0)
    pointer = trained / "champion_model" / "current.json"
    pointer.write_text(json.dumps({"salt": "0123456789abcdef"}))
    result = materialize(
        [*LOCAL_GRAPH, champion_model],
        selection=[champion_model],
        instance=DagsterInstance.ephemeral(),
        resources=RESOURCES,
        run_config={"ops": {"champion_model": {"config": {"accuracy_floor": 0.0}}}},
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("champion_model").error.to_string()
    assert str(pointer) in error and "0123456789abcdef" in error and "reset: true" in error
    assert json.loads(pointer.read_text())["salt"] == "0123456789abcdef"  # nothing reset
    # Choosing afresh is said in the config, and then works.
    again = materialise_champion(DagsterInstance.ephemeral(), accuracy_floor=0.0, reset=True)
    assert again["promoted"] is True
    # A pointer that is not JSON names itself too.
    pointer.write_text("{not json")
    with pytest.raises(DamagedFileError, match=r"current\.json is damaged"):
        read_current(trained / "champion_model")
