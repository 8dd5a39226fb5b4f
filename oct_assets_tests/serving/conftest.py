"""A trained local graph, built once per session and copied for each test that changes it."""

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.resources import LOCAL_RESOURCES

FAST_RUN = {
    "ops": {
        "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},
        "trained_model": {"config": {"epochs": 2, "image_size": 32, "batch_size": 16}},
    }
}
RESOURCES = {**LOCAL_RESOURCES, "io_manager": LatestArtifactIOManager()}


@pytest.fixture(scope="session")
def trained_template(tiny_tree_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<dir>/data` holding the local graph materialised on the tiny tree (`<dir>/images`)."""
    base = tmp_path_factory.mktemp("served")
    images = base / "images"
    shutil.copytree(tiny_tree_template, images)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OCT_DATA_DIR", str(base / "data"))
        mp.setenv("OCT_IMAGES_DIR", str(images))
        result = materialize(
            LOCAL_GRAPH,
            instance=DagsterInstance.ephemeral(),
            resources=RESOURCES,
            run_config=FAST_RUN,
        )
        assert result.success
    return base


@pytest.fixture
def trained(trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trained data folder, set as OCT_DATA_DIR, for one test: a copy of it is kept aside
    and put back when the test ends, so every test starts from the same folder."""
    data = trained_template / "data"
    saved = tmp_path / "saved_data"
    shutil.copytree(data, saved, symlinks=True)
    monkeypatch.setenv("OCT_DATA_DIR", str(data))
    monkeypatch.setenv("OCT_IMAGES_DIR", str(trained_template / "images"))
    yield data
    shutil.rmtree(data)
    shutil.move(saved, data)
