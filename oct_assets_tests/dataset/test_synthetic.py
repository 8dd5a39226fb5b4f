"""The embedded synthetic dataset: a valid OCT2017 tree, marked synthetic, deterministic."""

import hashlib
from pathlib import Path

import pytest

from oct_assets.contracts.formats import CLASSES
from oct_assets.dataset.layout import SYNTHETIC_MARKER
from oct_assets.dataset.scan import scan_tree
from oct_assets.dataset.synthetic import make_synthetic_oct2017


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpeg")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def make(root: Path, seed: int = 0) -> Path:
    return make_synthetic_oct2017(
        root, train_patients=2, test_patients=1, images_per_patient=2, seed=seed
    )


def test_a_valid_tree_marked_synthetic_with_disjoint_patients(tmp_path: Path) -> None:
    scan = scan_tree(make(tmp_path / "OCT2017"))
    assert scan.synthetic and (scan.root / SYNTHETIC_MARKER).is_file()
    assert scan.ignored == []
    assert scan.counts() == {"train": dict.fromkeys(CLASSES, 4), "test": dict.fromkeys(CLASSES, 2)}
    train = {r.patient for r in scan.records if r.split == "train"}
    test = {r.patient for r in scan.records if r.split == "test"}
    assert train and test and not train & test


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b = make(tmp_path / "a" / "OCT2017"), make(tmp_path / "b" / "OCT2017")
    c = make(tmp_path / "c" / "OCT2017", seed=1)
    assert digest(a) == digest(b) != digest(c)


def test_never_overwrites_an_existing_folder(tmp_path: Path) -> None:
    root = tmp_path / "OCT2017"
    root.mkdir()
    (root / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        make(root)
    assert (root / "mine.txt").read_text() == "keep"
