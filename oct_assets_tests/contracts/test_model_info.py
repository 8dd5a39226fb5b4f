"""`model.json` through its one definition: what the writers have always written reads back
and writes out byte for byte, older files read, damaged ones name themselves."""

import json
from pathlib import Path

import pytest

from oct_assets.contracts.errors import DamagedFileError, OctMLError
from oct_assets.contracts.model_info import EnsembleMember, InputGeometry, ModelInfo

CONFIG = {"architecture": "compact", "image_size": 32, "seed": 0, "tta_flip": True}
METRICS = {"amp": False, "epochs_run": 2, "best_epoch": 2, "history": [{"epoch": 1}]}
# What the trainer wrote before `ModelInfo` (its dict literal, in its key order).
TRAINED = {
    "classes": ["CNV", "DME", "DRUSEN", "NORMAL"],
    "input": {"size": 32, "channels": 1, "fit": "resize"},
    "architecture": "compact",
    "config": CONFIG,
    "metrics": METRICS,
    "device": "cpu",
    "gpu_name": None,
    "world_size": 1,
    "amp": False,
    "epochs_run": 2,
    "best_epoch": 2,
    "train_seconds": 1.5,
    "images_per_second": 100.0,
    "torch_version": "2.5.1",
    "sample_salt": "0123456789abcdef",
    "min_image_size": 16,
}
# What the ensemble asset wrote before `ModelInfo`.
ENSEMBLE = {
    "kind": "ensemble",
    "members": [{"asset": "cv_model", "salt": "a"}, {"asset": "cv_model", "salt": "b"}],
    "classes": ["CNV", "DME", "DRUSEN", "NORMAL"],
    "input": {"size": 32, "channels": 1, "fit": "resize"},
    "architecture": "ensemble of 2 compact",
    "config": {**CONFIG, "tta_flip": False},
    "members_tta_flip": [True, False],
    "sample_salt": "0123456789abcdef",
    "min_image_size": 16,
    "torch_version": "2.5.1",
    "device": "cpu",
}


def legacy_text(obj: dict) -> str:
    return json.dumps(obj, indent=2) + "\n"


@pytest.mark.parametrize("written", [TRAINED, ENSEMBLE], ids=["trained", "ensemble"])
def test_what_the_writers_wrote_reads_and_writes_back_byte_for_byte(
    written: dict, tmp_path: Path
) -> None:
    (tmp_path / "model.json").write_text(legacy_text(written))
    info = ModelInfo.read(tmp_path)
    assert info.to_text() == legacy_text(written)
    out = tmp_path / "again"
    out.mkdir()
    assert info.write(out).read_text() == legacy_text(written)


def test_attributes_are_typed() -> None:
    info = ModelInfo.from_json(ENSEMBLE, "model.json")
    assert info.is_ensemble and info.classes == ("CNV", "DME", "DRUSEN", "NORMAL")
    assert info.input == InputGeometry(size=32, channels=1, fit="resize")
    assert info.members == (EnsembleMember("cv_model", "a"), EnsembleMember("cv_model", "b"))
    assert info.members_tta_flip == (True, False)
    trained = ModelInfo.from_json(TRAINED, "model.json")
    assert not trained.is_ensemble and trained.members == () and trained.metrics == METRICS


def test_an_older_model_json_reads_with_what_it_lacks_as_none() -> None:
    older = {k: v for k, v in TRAINED.items() if k not in ("gpu_name", "world_size", "amp")}
    info = ModelInfo.from_json({**older, "retired_key": 1}, "model.json")
    assert info.gpu_name is None and info.world_size is None and info.amp is None
    assert info.sample_salt == TRAINED["sample_salt"]


def test_the_environment_is_written_last_and_only_when_recorded() -> None:
    info = ModelInfo.from_json(TRAINED, "model.json")
    assert "environment" not in info.to_json()
    env = {"hash": "abc", "python": "3.11.9", "torch": "2.5.1", "cuda": None}
    recorded = ModelInfo.from_json({**TRAINED, "environment": env}, "model.json")
    assert recorded.environment == env
    assert list(recorded.to_json()) == [*TRAINED, "environment"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"classes": ', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in TRAINED.items() if k != "config"}), "no 'config'"),
        (json.dumps({k: v for k, v in TRAINED.items() if k != "classes"}), "no 'classes'"),
        (json.dumps({**TRAINED, "input": {"size": 32, "fit": "resize"}}), "no 'channels'"),
        (json.dumps({**TRAINED, "input": {**TRAINED["input"], "size": "32"}}), "input.size"),
        (json.dumps({**ENSEMBLE, "members": []}), "no 'members'"),
    ],
)
def test_a_damaged_model_json_names_itself(text: str, says: str, tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(DamagedFileError, match=says) as info:
        ModelInfo.read(tmp_path)
    assert str(tmp_path / "model.json") in str(info.value)


def test_a_folder_without_model_json_says_so(tmp_path: Path) -> None:
    with pytest.raises(OctMLError, match=r"has no model\.json"):
        ModelInfo.read(tmp_path)
