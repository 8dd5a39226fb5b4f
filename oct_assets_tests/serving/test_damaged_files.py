"""Every damaged file the project wrote names itself: a manifest, a pointer, a model."""

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.contracts.errors import DamagedFileError
from oct_assets.ml.predict import load_model
from oct_assets.resources.io_manager import pointer_salt
from oct_assets.store.salt import read_manifest
from oct_assets_tests.serving.conftest import RESOURCES


def _model_dir(data: Path) -> Path:
    salt = json.loads((data / "trained_model" / "latest.json").read_text())["salt"]
    return data / "trained_model" / salt


def test_a_truncated_model_pt_names_itself(trained: Path) -> None:
    folder = _model_dir(trained)
    weights = folder / "model.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DamagedFileError, match=r"model\.pt is damaged") as info:
        load_model(folder)
    assert str(weights) in str(info.value)


def test_a_damaged_model_json_names_itself(trained: Path) -> None:
    folder = _model_dir(trained)
    (folder / "model.json").write_text('{"classes": ')
    with pytest.raises(DamagedFileError, match="not JSON") as info:
        load_model(folder)
    assert str(folder / "model.json") in str(info.value)


@pytest.mark.parametrize("text", ["{broken", "[1, 2]", "\xff\xfe".encode("latin-1")])
def test_a_damaged_manifest_names_itself(trained: Path, text) -> None:
    folder = _model_dir(trained)
    manifest = folder / "manifest.json"
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DamagedFileError) as info:
        read_manifest(folder)
    assert str(manifest) in str(info.value)


def test_a_damaged_latest_pointer_names_itself_in_the_run(trained: Path) -> None:
    pointer = trained / "trained_model" / "latest.json"
    pointer.write_text("not json")
    with pytest.raises(DamagedFileError, match=r"latest\.json is damaged"):
        pointer_salt("trained_model")
    result = materialize(
        LOCAL_GRAPH,
        selection=["predictions"],
        instance=DagsterInstance.ephemeral(),
        resources=RESOURCES,
        raise_on_error=False,
    )
    assert not result.success
    assert str(pointer) in result.failure_data_for_node("predictions").error.to_string()
