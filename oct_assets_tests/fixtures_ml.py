"""Fixtures that build small sample folders for the ML core."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
REPO = Path(__file__).resolve().parent.parent


def tiny_scan(
    label: int, rng: np.random.Generator, width: int = 80, height: int = 64
) -> np.ndarray:
    """A small grayscale 'scan' whose class is a bright band at a class-specific depth.

    Easy to learn in a few steps, so tests of the loop need few epochs; noise and a random
    shift keep the images distinct.
    """
    img = rng.normal(40, 12, size=(height, width))
    row = int(height * (0.2 + 0.2 * label)) + int(rng.integers(-2, 3))
    img[row : row + 5, :] += 150
    img[:, int(rng.integers(0, width - 8)) :][:, :8] += 30 * label
    return np.clip(img, 0, 255).astype(np.uint8)


def write_sample(
    dest: Path,
    train_per_class: int = 8,
    test_per_class: int = 3,
    images_per_patient: int = 2,
    salt: str = "tiny",
    seed: int = 0,
    empty_train_class: str | None = None,
) -> Path:
    """Write a sample folder in the reduced_sample layout (images.csv + manifest.json)."""
    rng = np.random.default_rng(seed)
    rows, patient = [], 1000
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            if split == "train" and name == empty_train_class:
                continue
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                if i % images_per_patient == 0:
                    patient += 1
                rel = f"{split}/{name}/{name}-{patient}-{i}.jpeg"
                Image.fromarray(tiny_scan(label, rng)).save(dest / rel, quality=90)
                rows.append((rel, split, name, str(patient)))
    write_index(dest, rows, salt)
    return dest


def write_index(dest: Path, rows: list[tuple[str, str, str, str]], salt: str) -> None:
    with open(dest / "images.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "split", "label", "patient"])
        w.writerows(rows)
    (dest / "manifest.json").write_text(json.dumps({"salt": salt, "classes": list(CLASSES)}))


def link_tree_sample(tree: Path, dest: Path, salt: str) -> Path:
    """Symlink every scan of an OCT2017-layout tree (`<split>/<CLASS>/<CLASS>-<patient>-<n>.jpeg`)
    into a sample folder; the tree itself is only read (real scans are read-only)."""
    rows = []
    for split in ("train", "test"):
        for name in CLASSES:
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            for f in sorted((tree / split / name).glob("*.jpeg")):
                rel = f"{split}/{name}/{f.name}"
                os.symlink(f.resolve(), dest / rel)
                rows.append((rel, split, name, f.name.split("-")[1]))
    write_index(dest, rows, salt)
    return dest


def resample(sample: Path, dest: Path, n_train: int, salt: str, seed: int = 0) -> Path:
    """A sample of `n_train` train rows drawn from another sample's train rows in a seeded
    order, cycling (as fresh symlinks with a repeat suffix) when more are asked than exist."""
    with open(sample / "images.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    order = np.random.default_rng(seed).permutation(len(rows))
    out = []
    for k in range(n_train):
        r = rows[order[k % len(rows)]]
        rel = Path(r["file"])
        if k >= len(rows):
            rel = rel.with_name(f"{rel.stem}-r{k // len(rows)}{rel.suffix}")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.realpath(sample / r["file"]), dest / rel)
        out.append((rel.as_posix(), "train", r["label"], r["patient"]))
    classes = json.loads((sample / "manifest.json").read_text())["classes"]
    with open(dest / "images.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "split", "label", "patient"])
        w.writerows(sorted(out))
    (dest / "manifest.json").write_text(json.dumps({"salt": salt, "classes": classes}))
    return dest


def bench_source(work: Path, min_images: int = 0) -> Path:
    """A sample of full-size scans for benchmarks: the real OCT2017 scans when present, else
    the project's deterministic synthetic generator (at least `min_images` train images)."""
    tree = real_data_root()
    if not (tree / "train").is_dir():
        from oct_assets.dataset.synthetic import make_synthetic_oct2017

        patients = max(2, min_images // 8 + 1)  # per class, 2 images each
        tree = make_synthetic_oct2017(work / "synthetic_tree", patients, 1, 2, seed=0)
    return link_tree_sample(tree, work / "source_sample", "bench-source")


def real_data_root() -> Path:
    return Path(os.environ.get("OCT_REAL_DATA", REPO.parent / "shared" / "real_oct" / "OCT2017"))


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared read-only 4-class sample: 8 train + 3 test images per class, 80x64 pixels."""
    return write_sample(tmp_path_factory.mktemp("tiny") / "sample")


@pytest.fixture
def make_sample(tmp_path: Path) -> Callable[..., Path]:
    """Factory for a private sample folder (tests that break it on purpose)."""

    def make(name: str = "sample", **kwargs) -> Path:
        return write_sample(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def tiny_config():
    """A config that trains the tiny sample in about a second."""
    from oct_assets.ml.config import TrainConfig

    return TrainConfig(
        epochs=2, image_size=32, batch_size=8, width=8, blocks=3, decode_workers=1, threads=1
    )


@pytest.fixture
def real_sample(tmp_path: Path) -> Path:
    """The real OCT2017 scans as a sample; skipped when absent, failed when absent on CI."""
    root = real_data_root()
    if not (root / "train").is_dir():
        message = f"real OCT2017 scans not found at {root} (set OCT_REAL_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return link_tree_sample(root, tmp_path / "real_sample", "real-oct2017")
