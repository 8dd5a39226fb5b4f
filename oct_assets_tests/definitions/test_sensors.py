"""`new_images_sensor` on a real folder, tick by tick, and the predictions automation condition."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultSensorStatus,
    build_sensor_context,
    evaluate_automation_conditions,
    instance_for_test,
)
from dagster._core.definitions.sensor_definition import SensorExecutionData

from oct_assets.dataset.scan import scan_tree
from oct_assets.definitions import defs
from oct_assets.sensors.automation import automation_sensor
from oct_assets.sensors.images import REFRESH_ENV, new_images_sensor, stat_signature

DEFAULT_SELECTION = [AssetKey("raw_oct_images"), AssetKey("reduced_sample")]


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as instance:
        yield instance


class Ticker:
    """Evaluates the sensor as the daemon does, carrying the cursor from tick to tick."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self.cursor: str | None = None

    def tick(self) -> SensorExecutionData:
        context = build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs)
        data = new_images_sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def first_image(root: Path) -> Path:
    return sorted((root / "train" / "CNV").iterdir())[0]


def test_first_tick_requests_raw_and_sample(tiny_tree: Path, instance: DagsterInstance) -> None:
    data = Ticker(instance).tick()
    [request] = data.run_requests
    assert list(request.asset_selection) == DEFAULT_SELECTION
    assert request.tags["oct/reason"] == "first tick"
    # The same fingerprint as raw_oct_images computes from its full scan.
    assert request.tags["oct/images_fingerprint"] == scan_tree(tiny_tree).fingerprint[:16]
    assert data.cursor


def test_unchanged_tick_requests_nothing(tiny_tree: Path, instance: DagsterInstance) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    cursor = ticker.cursor
    for _ in range(2):
        data = ticker.tick()
        assert not data.run_requests
        assert "no image added, removed or touched" in data.skip_message
        assert ticker.cursor == cursor


def test_added_image_requests_a_refresh(tiny_tree: Path, instance: DagsterInstance) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    shutil.copy2(first_image(tiny_tree), tiny_tree / "train" / "CNV" / "CNV-9999999-1.jpeg")
    [request] = ticker.tick().run_requests
    assert request.tags["oct/reason"] == "images changed"
    assert list(request.asset_selection) == DEFAULT_SELECTION
    assert not ticker.tick().run_requests


def test_removed_image_requests_a_refresh(tiny_tree: Path, instance: DagsterInstance) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    first_image(tiny_tree).unlink()
    assert len(ticker.tick().run_requests) == 1
    assert not ticker.tick().run_requests


def test_touched_image_requests_a_refresh(tiny_tree: Path, instance: DagsterInstance) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    image = first_image(tiny_tree)
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert len(ticker.tick().run_requests) == 1
    assert not ticker.tick().run_requests


def test_renamed_image_requests_a_refresh(tiny_tree: Path, instance: DagsterInstance) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    image = first_image(tiny_tree)
    image.rename(image.with_name("CNV-9999998-1.jpeg"))  # same size and mtime, new name
    assert len(ticker.tick().run_requests) == 1


def test_non_image_file_moves_the_cursor_but_requests_nothing(
    tiny_tree: Path, instance: DagsterInstance
) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    before = ticker.cursor
    (tiny_tree / "train" / "CNV" / "notes.txt").write_text("not an image")
    data = ticker.tick()
    assert not data.run_requests and "only non-image files changed" in data.skip_message
    assert ticker.cursor != before
    assert "no image added" in ticker.tick().skip_message


def test_training_is_opt_in(
    tiny_tree: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REFRESH_ENV, "trained_model")
    [request] = Ticker(instance).tick().run_requests
    assert list(request.asset_selection) == [*DEFAULT_SELECTION, AssetKey("trained_model")]
    monkeypatch.setenv(REFRESH_ENV, "raw_oct_images")
    [request] = Ticker(instance).tick().run_requests
    assert list(request.asset_selection) == [AssetKey("raw_oct_images")]


def test_unknown_refresh_target_names_the_setting(
    tiny_tree: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REFRESH_ENV, "everything")
    with pytest.raises(Exception, match=f"{REFRESH_ENV}='everything'.*raw_oct_images"):
        Ticker(instance).tick()


def test_missing_root_skips_without_generating_data(
    data_env: Path, tmp_path: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("OCT_IMAGES_DIR", str(missing))
    data = Ticker(instance).tick()
    assert not data.run_requests and str(missing) in data.skip_message
    assert not missing.exists()


def test_new_root_requests_a_refresh(
    tiny_tree: Path, tmp_path: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticker = Ticker(instance)
    ticker.tick()
    other = tmp_path / "other" / "OCT2017"
    shutil.copytree(tiny_tree, other, copy_function=shutil.copy2)
    monkeypatch.setenv("OCT_IMAGES_DIR", str(other))
    [request] = ticker.tick().run_requests
    assert request.tags["oct/reason"] == "new image root"


def test_stat_signature_moves_with_every_change(tiny_tree: Path) -> None:
    before = stat_signature(tiny_tree)
    assert stat_signature(tiny_tree) == before
    image = first_image(tiny_tree)
    image.write_bytes(image.read_bytes() + b"\0")
    assert stat_signature(tiny_tree) != before


def test_predictions_follow_a_new_model_not_a_new_sample() -> None:
    """`predictions` is requested after `trained_model` updates, never after `reduced_sample`
    alone (that would score an old model on a test split it may have trained on)."""
    instance = DagsterInstance.ephemeral()

    def tick(cursor=None):
        return evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    def materialized(*names: str) -> None:
        for name in names:
            instance.report_runless_asset_event(AssetMaterialization(name))

    result = tick()
    assert result.total_requested == 0  # upstream missing: nothing to evaluate yet
    materialized("raw_oct_images", "reduced_sample", "trained_model")
    result = tick(result.cursor)
    assert result.get_num_requested(AssetKey("predictions")) == 1
    assert result.total_requested == 1  # raw, sample and model are never automatic
    materialized("predictions")
    result = tick(result.cursor)
    assert result.total_requested == 0
    materialized("raw_oct_images", "reduced_sample")
    result = tick(result.cursor)
    assert result.total_requested == 0
    materialized("trained_model")
    result = tick(result.cursor)
    assert result.get_num_requested(AssetKey("predictions")) == 1


def test_automation_is_on_and_the_image_sensor_opt_in() -> None:
    """Predictions follow new models without anyone's action; the image sensor starts runs on a
    shared folder, so a person turns it on."""
    assert automation_sensor.default_status == DefaultSensorStatus.RUNNING
    targeted = automation_sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert AssetKey("predictions") in targeted
    assert new_images_sensor.default_status == DefaultSensorStatus.STOPPED
    names = {s.name for s in defs.get_repository_def().sensor_defs}
    assert names == {
        "new_images_sensor",
        "automation_sensor",
        "cluster_model_sensor",
        "inbox_sensor",
    }
    assert defs.get_sensor_def("inbox_sensor").default_status == DefaultSensorStatus.STOPPED
