import os
import shutil
from pathlib import Path

import pytest

from oct_assets.contracts.formats import CLASSES
from oct_assets.dataset.scan import ImageTreeError, scan_tree, tree_fingerprint


def test_scan_counts_and_patients(tiny_tree: Path) -> None:
    scan = scan_tree(tiny_tree)
    assert scan.synthetic
    assert scan.counts() == {"train": dict.fromkeys(CLASSES, 8), "test": dict.fromkeys(CLASSES, 4)}
    assert scan.patients() == {"train": 16, "test": 8}
    assert scan.ignored == []
    r = next(r for r in scan.records if r.path.startswith("train/CNV/"))
    assert r.label == "CNV" and r.split == "train" and r.size > 0
    assert r.path == f"train/CNV/CNV-{r.patient}-{r.path.rsplit('-', 1)[1]}"


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageTreeError, match=str(tmp_path / "nope")):
        scan_tree(tmp_path / "nope")


def test_missing_split_is_named(tiny_tree: Path) -> None:
    shutil.rmtree(tiny_tree / "test")
    with pytest.raises(ImageTreeError, match="has no test folder"):
        scan_tree(tiny_tree)


def test_unknown_class_lists_known_ones(tiny_tree: Path) -> None:
    (tiny_tree / "train" / "GLAUCOMA").mkdir()
    with pytest.raises(ImageTreeError, match=r"GLAUCOMA.*known classes: CNV, DME, DRUSEN, NORMAL"):
        scan_tree(tiny_tree)


def test_empty_class_is_named(tiny_tree: Path) -> None:
    for f in (tiny_tree / "test" / "DME").iterdir():
        f.unlink()
    with pytest.raises(ImageTreeError, match=r"test/DME holds no images"):
        scan_tree(tiny_tree)


def test_badly_named_files_are_left_out_and_reported(tiny_tree: Path) -> None:
    (tiny_tree / "train" / "CNV" / "scan_0001.jpeg").write_bytes(b"x")
    (tiny_tree / "train" / "CNV" / "DME-123-1.jpeg").write_bytes(b"x")
    (tiny_tree / "train" / "CNV" / ".DS_Store").write_bytes(b"x")
    scan = scan_tree(tiny_tree)
    reasons = dict(scan.ignored)
    assert "does not match" in reasons["train/CNV/scan_0001.jpeg"]
    assert "folder is CNV" in reasons["train/CNV/DME-123-1.jpeg"]
    assert len(scan.ignored) == 2
    assert scan.counts()["train"]["CNV"] == 8


def test_fingerprint_sees_add_remove_touch(tiny_tree: Path) -> None:
    before = scan_tree(tiny_tree).fingerprint
    assert before == scan_tree(tiny_tree).fingerprint == tree_fingerprint(tiny_tree)
    victim = next((tiny_tree / "train" / "NORMAL").iterdir())
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = scan_tree(tiny_tree).fingerprint
    assert touched != before
    assert touched == tree_fingerprint(tiny_tree)
    shutil.copy(victim, victim.with_name("NORMAL-1-99.jpeg"))
    added = scan_tree(tiny_tree).fingerprint
    assert added not in (before, touched)
    victim.with_name("NORMAL-1-99.jpeg").unlink()
    assert scan_tree(tiny_tree).fingerprint == touched
