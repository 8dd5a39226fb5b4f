"""`manifest.json` through its one definition: the flat object on disk, the base keys as
attributes and the asset's summary beside them; a sample's manifest as the ML core reads it."""

import json
from pathlib import Path

import pytest

from oct_assets.contracts.errors import DamagedFileError, SampleError
from oct_assets.contracts.manifest import SaltedManifest, SampleManifest, pointer_salt
from oct_assets.store.salt import read_manifest

WRITTEN = {
    "asset": "reduced_sample",
    "salt": "0123456789abcdef",
    "code_version": "3",
    "config": {"seed": 0},
    "upstream": {"raw_oct_images": "fedcba9876543210"},
    "created": "2025-01-01T00:00:00+0000",
    "classes": ["CNV", "DME", "DRUSEN", "NORMAL"],
    "n_images": 8,
}


def test_base_keys_are_attributes_and_the_rest_is_the_summary(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(WRITTEN))
    m = read_manifest(tmp_path)
    assert (m.asset, m.salt, m.code_version) == ("reduced_sample", WRITTEN["salt"], "3")
    assert m.upstream == {"raw_oct_images": "fedcba9876543210"} and m.config == {"seed": 0}
    assert m.summary == {"classes": WRITTEN["classes"], "n_images": 8}
    assert m.to_json() == WRITTEN


def test_a_summary_may_not_overwrite_a_base_key() -> None:
    with pytest.raises(ValueError, match="salt"):
        SaltedManifest.new("a", "s", "1", {}, {}).with_summary({"salt": "other"})


@pytest.mark.parametrize("obj", [[1, 2], {k: v for k, v in WRITTEN.items() if k != "upstream"}])
def test_a_damaged_manifest_names_itself(obj, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(obj))
    with pytest.raises(DamagedFileError) as info:
        read_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


def test_the_sample_manifest_of_a_salted_sample_and_of_a_fold_sample(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(WRITTEN))
    sample = SampleManifest.read(tmp_path)
    assert sample.salt == WRITTEN["salt"] and sample.classes == tuple(WRITTEN["classes"])
    assert sample.fold is None
    fold = SampleManifest("abc", ("A", "B"), {"fold": 1, "k": 3, "fold_seed": 123})
    out = tmp_path / "fold"
    out.mkdir()
    text = fold.write(out).read_text()
    assert text == json.dumps(fold.to_json(), indent=2) + "\n"
    assert list(json.loads(text)) == ["salt", "classes", "fold"]
    assert SampleManifest.read(out) == fold


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"classes": ["A"]}', "'salt' must be a non-empty string"),
        ('{"salt": "s", "classes": ["A", "A"]}', "'classes' must be a non-empty list"),
    ],
)
def test_a_bad_sample_manifest_is_a_sample_error(text: str, says: str, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(SampleError, match=says):
        SampleManifest.read(tmp_path)


def test_a_pointer_names_its_salt_or_itself(tmp_path: Path) -> None:
    good, bad = tmp_path / "latest.json", tmp_path / "current.json"
    good.write_text(json.dumps({"asset": "a", "salt": "0123456789abcdef"}))
    bad.write_text(json.dumps({"salt": 3}))
    assert pointer_salt(good) == "0123456789abcdef"
    with pytest.raises(DamagedFileError, match=r"current\.json is damaged"):
        pointer_salt(bad)
