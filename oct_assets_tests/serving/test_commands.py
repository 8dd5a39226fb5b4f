"""`python -m oct_assets champion` and `predict` in a fresh process, on a real scan."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance
from PIL import Image

from oct_assets.assets.champion import champion_model
from oct_assets_tests.fixtures_ml import real_data_root
from oct_assets_tests.serving.test_inbox import run

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "oct_assets", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_a_champion_says_how_to_get_one(data_env: Path) -> None:
    proc = cli("champion")
    assert proc.returncode == 1 and "materialise it first" in proc.stderr


def test_champion_and_predict_on_a_real_scan(trained: Path, tmp_path: Path) -> None:
    real = sorted((real_data_root() / "test" / "DME").glob("*.jpeg"))
    if not real:
        pytest.skip(f"no real scans under {real_data_root()}")
    meta = run(DagsterInstance.ephemeral(), champion_model, accuracy_floor=0.0)

    shown = cli("champion")
    assert shown.returncode == 0, shown.stderr
    assert f"trained_model {meta['model_salt']}" in shown.stdout
    for step in ("reduced_sample", "raw_oct_images", "fingerprint", "predictions", "accuracy"):
        assert step in shown.stdout, step

    cam = tmp_path / "out" / "cam.png"
    scored = cli("predict", str(real[0]), "--cam", str(cam))
    assert scored.returncode == 0, scored.stderr
    line = scored.stdout.splitlines()[-1]
    assert line.startswith(f"{real[0]}: ") and "CNV" in line and "NORMAL" in line
    probs = [float(x) for x in line.split("(")[1].split(")")[0].split()[1::2]]
    assert len(probs) == 4 and abs(sum(probs) - 1) < 1e-3
    with Image.open(cam) as im:
        assert im.format == "PNG" and im.size[0] > 0

    junk = tmp_path / "junk.jpeg"
    junk.write_text("not a scan")
    refused = cli("predict", str(real[0]), str(junk))
    assert refused.returncode == 1 and f"{junk}: not scored: not an image" in refused.stdout
