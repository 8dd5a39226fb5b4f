"""The real-data preset through the whole graph on real Kermany scans (patient-split sample)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from dagster import DagsterInstance, materialize
from PIL import Image

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.contracts.formats import PREDICTIONS_CSV, read_csv_rows
from oct_assets.ml.config import REAL_DATA_DEFAULTS, real_data_config
from oct_assets.ml.decode import decode_gray
from oct_assets.ml.predict import evaluate
from oct_assets.ml.train import train
from oct_assets.paths import PROJECT_ROOT
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.fixtures_ml import CLASSES, write_index
from oct_assets_tests.resources import LOCAL_RESOURCES

PRESET = PROJECT_ROOT / "oct_assets" / "presets" / "real_data.yaml"
REAL = Path(os.environ.get("OCT_REAL_DATA", PROJECT_ROOT.parent / "shared/real_oct/OCT2017"))


def test_preset_is_the_ml_recipe() -> None:
    preset = yaml.safe_load(PRESET.read_text())["ops"]
    assert preset["trained_model"]["config"] == REAL_DATA_DEFAULTS
    assert preset["reduced_sample"]["config"]["train_per_class"] is None
    assert preset["reduced_sample"]["config"]["test_per_class"] is None


@pytest.mark.slow
def test_real_scans_with_the_preset(data_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not REAL.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real OCT scans expected at {REAL} in CI")
        pytest.skip(f"no real OCT scans at {REAL} (set OCT_REAL_DATA)")
    monkeypatch.setenv("OCT_IMAGES_DIR", str(REAL))
    result = materialize(
        LOCAL_GRAPH,
        instance=DagsterInstance.ephemeral(),
        resources={**LOCAL_RESOURCES, "io_manager": LatestArtifactIOManager()},
        run_config=yaml.safe_load(PRESET.read_text()),
    )
    assert result.success
    sample = result.output_for_node("reduced_sample")
    counts = json.loads((sample.path / "manifest.json").read_text())["counts"]
    assert sum(counts["train"].values()) == 348 and sum(counts["test"].values()) == 115
    metrics = json.loads((result.output_for_node("predictions").path / "metrics.json").read_text())
    print(f"real-data accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")
    print(f"confusion matrix (rows = true {metrics['classes']}): {metrics['confusion_matrix']}")
    assert metrics["n_images"] == 115
    # Measured on this split: 0.939 (seed 0, the preset, 95% CI 0.893-0.976 by bootstrap over
    # its 79 patients; pooled over patient folds of all 463 scans the recipe scores 0.957-0.963
    # by seed). 115 scans of 79 patients move by a few points with the seed or another CPU's
    # rounding, so the floor sits near the interval's lower end, well above a broken recipe
    # (0.25-0.8).
    assert metrics["accuracy"] >= 0.90
    assert metrics["accuracy_ci95"][0] <= metrics["accuracy"] <= metrics["accuracy_ci95"][1]
    assert metrics["n_patients"] == 79


def test_preset_prediction_does_not_depend_on_scan_width(tmp_path: Path) -> None:
    """A scan resampled to 2x and 3x its width (as the later Kermany release's 1024-px scans
    look) must give the preset the same input and the same prediction."""
    if not REAL.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real OCT scans expected at {REAL} in CI")
        pytest.skip(f"no real OCT scans at {REAL} (set OCT_REAL_DATA)")
    sample, originals = tmp_path / "sample", []
    rows: list[tuple[str, str, str, str]] = []
    for name in CLASSES:
        scans = sorted((REAL / "train" / name).glob("*.jpeg"))
        (sample / "train" / name).mkdir(parents=True)
        (sample / "test" / name).mkdir(parents=True)
        for f in scans[:: len(scans) // 12][:12]:  # a small, spread-out train set
            os.symlink(f, sample / "train" / name / f.name)
            rows.append((f"train/{name}/{f.name}", "train", name, f.name.split("-")[1]))
        test = next(f for f in sorted((REAL / "test" / name).glob("*.jpeg")) if _width(f) == 512)
        with Image.open(test) as im:
            scan = im.convert("L")
        for k in (1, 2, 3):
            rel = f"test/{name}/{test.stem}-x{k}.jpeg"
            scan.resize((scan.width * k, scan.height), Image.Resampling.BICUBIC).save(
                sample / rel, quality=95
            )
            rows.append((rel, "test", name, test.name.split("-")[1]))
        originals.append(f"test/{name}/{test.stem}")
    write_index(sample, rows, salt="widths")

    fit = REAL_DATA_DEFAULTS["fit"]
    inputs = {k: decode_gray(sample / f"{originals[0]}-x{k}.jpeg", 96, fit) for k in (1, 2, 3)}
    crops = {k: decode_gray(sample / f"{originals[0]}-x{k}.jpeg", 96, "crop") for k in (1, 2)}
    assert np.abs(inputs[2].astype(float) - inputs[1]).mean() < 2.0
    assert np.abs(inputs[3].astype(float) - inputs[1]).mean() < 2.0
    assert np.abs(crops[2].astype(float) - crops[1]).mean() > 10.0  # what "crop" did

    config = real_data_config(epochs=40, image_size=96, crop_size=84, width=8, decode_workers=1)
    train(sample, tmp_path / "model", config, cache_dir=tmp_path / "cache")
    evaluate(tmp_path / "model", sample, tmp_path / "eval", cache_dir=tmp_path / "cache")
    rows_out = read_csv_rows(tmp_path / "eval" / PREDICTIONS_CSV)
    probs = {r["file"]: np.array([float(r[c]) for c in CLASSES]) for r in rows_out}
    spread = max(
        np.abs(probs[f"{a}-x1.jpeg"] - probs[f"{b}-x1.jpeg"]).max()
        for a in originals
        for b in originals
    )
    assert spread > 0.2  # the model tells these scans apart, so a moved prediction would show
    for stem in originals:
        for k in (2, 3):
            moved = np.abs(probs[f"{stem}-x{k}.jpeg"] - probs[f"{stem}-x1.jpeg"]).max()
            # re-encoding and resampling the JPEG moves the input a little (mean < 2 of 255),
            # so the prediction may move a little: measured up to 0.036 against a spread of 0.83
            assert moved < 0.05, f"{stem}: {k}x the width moves a probability by {moved:.3f}"


def _width(path: Path) -> int:
    with Image.open(path) as im:
        return im.width
