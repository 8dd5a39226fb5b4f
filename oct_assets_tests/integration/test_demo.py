"""The README's run command on the embedded default: synthetic data, said loudly, learnable."""

import os
import re
import subprocess
import sys
from pathlib import Path


def test_python_m_oct_assets_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_IMAGES_DIR", "DAGSTER_HOME")}
    env["OCT_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SYNTHETIC DATA" in proc.stderr
    accuracy = float(re.search(r"test accuracy: ([0-9.]+) on 40 images", proc.stdout).group(1))
    assert accuracy >= 0.9
    for name in ("raw_oct_images", "reduced_sample", "trained_model", "predictions"):
        folder = Path(re.search(rf"^{name}:\s+(\S+)$", proc.stdout, re.M).group(1))
        assert folder.parent == tmp_path / "data" / name
        assert (folder / "manifest.json").is_file()
    assert (tmp_path / "data" / "OCT2017" / "SYNTHETIC.txt").is_file()
