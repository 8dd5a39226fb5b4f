"""`model.ts` round trip: loads with torch alone and gives the loader's probabilities."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch

from oct_assets.ml.train import train
from oct_assets.serving.export import export_difference, export_torchscript

TORCH_ALONE = """
import json, sys, torch
extra = {"model.json": ""}
m = torch.jit.load(sys.argv[1], _extra_files=extra)
x = torch.load(sys.argv[2])
torch.save(m(x), sys.argv[3])
print(json.dumps({"classes": json.loads(extra["model.json"])["classes"],
                  "project": [k for k in sys.modules if k.startswith("oct_assets")]}))
"""


def test_export_round_trip(tiny_sample: Path, tiny_config, tmp_path: Path) -> None:
    # The real recipe's generalised-mean pooling and flip TTA are part of the export.
    config = dataclasses.replace(tiny_config, pool_power=4.0, tta_flip=True)
    model = tmp_path / "model"
    train(tiny_sample, model, config, cache_dir=tmp_path / "cache")
    ts = tmp_path / "model.ts"
    export_torchscript(model, ts)

    check = export_difference(model, ts, tiny_sample)
    assert check["n_images"] == 12 and check["same_classes"]
    assert check["max_abs_diff"] < 1e-5, check

    # A process with torch alone (no project on the path) loads and runs it.
    x = torch.rand(5, 1, config.image_size, config.image_size)
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            TORCH_ALONE,
            str(ts),
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.pt"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info == {"classes": ["CNV", "DME", "DRUSEN", "NORMAL"], "project": []}
    y = torch.load(tmp_path / "y.pt")
    assert y.shape == (5, 4) and torch.allclose(y.sum(1), torch.ones(5), atol=1e-5)
