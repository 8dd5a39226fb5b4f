from collections import Counter
from pathlib import Path

import pytest

from oct_assets.contracts.formats import CLASSES
from oct_assets.dataset.sampling import SampleError, check_images, draw_sample
from oct_assets.dataset.scan import ImageRecord


def records(n_patients: int = 10, per_patient: int = 3, shared: int = 0) -> list[ImageRecord]:
    """Train/test records; the first `shared` train patients of each class also appear in test."""
    out = []
    for label in CLASSES:
        for p in range(n_patients):
            for split in ("train", "test"):
                pid = f"{label}{p}" if split == "train" or p < shared else f"{label}t{p}"
                for n in range(per_patient):
                    out.append(
                        ImageRecord(
                            f"{split}/{label}/{label}-{pid}-{n}.jpeg", 1, 1, split, label, pid
                        )
                    )
    return out


def test_stratified_counts() -> None:
    sample = draw_sample(records(), train_per_class=7, test_per_class=4, seed=0)
    counts = Counter((r.split, r.label) for r in sample)
    assert counts == {**{("train", c): 7 for c in CLASSES}, **{("test", c): 4 for c in CLASSES}}


def test_deterministic_and_seed_dependent() -> None:
    a = draw_sample(records(), 7, 4, seed=1)
    assert a == draw_sample(list(reversed(records())), 7, 4, seed=1)  # not directory order
    assert a != draw_sample(records(), 7, 4, seed=2)


def test_no_patient_in_both_splits_even_when_source_leaks() -> None:
    for seed in range(5):
        sample = draw_sample(records(shared=6), None, 12, seed=seed)
        train = {r.patient for r in sample if r.split == "train"}
        test = {r.patient for r in sample if r.split == "test"}
        assert train and test and not train & test


def test_none_takes_everything_eligible() -> None:
    sample = draw_sample(records(), None, None, seed=0)
    assert len(sample) == len(records())


def test_too_many_names_the_setting() -> None:
    with pytest.raises(SampleError, match="train_per_class=31 but class CNV has only 30"):
        draw_sample(records(), 31, 1, seed=0)


def test_check_images_names_every_bad_file(tiny_tree: Path) -> None:
    good = sorted((tiny_tree / "train" / "CNV").iterdir())
    empty, truncated, text = good[0], good[1], good[2]
    empty.write_bytes(b"")
    truncated.write_bytes(truncated.read_bytes()[:2000])
    text.write_text("not an image at all")
    recs = [ImageRecord(f"train/CNV/{p.name}", 1, 1, "train", "CNV", "1") for p in good]
    with pytest.raises(SampleError) as err:
        check_images(tiny_tree, recs)
    msg = str(err.value)
    assert "3 unusable image(s)" in msg
    assert f"{empty}: empty file" in msg
    assert f"{truncated}: no JPEG end-of-image marker" in msg
    assert f"{text}: not an image" in msg
    check_images(tiny_tree, recs[3:])
