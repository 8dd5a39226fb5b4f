"""The real-data preset through the whole graph on real Kermany scans (patient-split sample)."""

import json
import os
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.ml.config import REAL_DATA_DEFAULTS
from oct_assets.paths import PROJECT_ROOT
from oct_assets.resources.io_manager import LatestArtifactIOManager
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
    # Measured on this split: 0.974 (seed 0, the preset) and 0.957 (seed 1). Another CPU's
    # kernels round differently, which moves a run as much as another seed would, so the floor
    # sits below that spread and well above the previous recipe's typical 0.948 minus noise
    # and a broken recipe (0.25-0.8).
    assert metrics["accuracy"] >= 0.94
