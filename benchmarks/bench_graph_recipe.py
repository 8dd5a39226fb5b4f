"""The whole one-model graph with a recipe change against the preset, side by side.

Each round runs `python -m oct_assets --config <preset>` and then the same with the change
(`--set`: JSON merged into `trained_model`'s config), each into a fresh OCT_DATA_DIR, so every
step runs cold; rounds interleave, so a noisy machine slows both alike. Prints the wall times,
the training times and test accuracies the runs report, and the ratio of the change to the
preset. No goal: it prices a recipe (docs/training.md, "Where this preset stops").

    OCT_IMAGES_DIR=../shared/real_oct/OCT2017 .venv/bin/python benchmarks/bench_graph_recipe.py \
        --set '{"image_size": 224, "crop_size": 200}' [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import alternate, report

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "oct_assets" / "presets" / "real_data.yaml"


def graph_run(config: Path, work: Path, outputs: list[str]) -> None:
    """The whole graph into a fresh data folder; its training time and accuracy into outputs."""
    data = Path(tempfile.mkdtemp(prefix="data_", dir=work))
    done = subprocess.run(
        [sys.executable, "-m", "oct_assets", "--config", str(config)],
        env={**os.environ, "OCT_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{config}: exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr}")
    trained = re.search(r"trained_model: done in ([\d.]+) s", done.stdout + done.stderr)
    accuracy = re.search(r"test accuracy: ([\d.]+)", done.stdout + done.stderr)
    outputs.append(
        f"train {trained[1] if trained else '?'} s, test {accuracy[1] if accuracy else '?'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="JSON merged into trained_model's config")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("OCT_IMAGES_DIR"):
        raise SystemExit("OCT_IMAGES_DIR: set it to an OCT2017 folder of real scans")
    change = json.loads(args.set)
    work = Path(tempfile.mkdtemp(prefix="oct_bench_recipe_"))
    preset = yaml.safe_load(PRESET.read_text())
    preset["ops"]["trained_model"]["config"].update(change)
    variant = work / "variant.yaml"
    variant.write_text(yaml.safe_dump(preset))
    outputs: dict[str, list[str]] = {"preset": [], "change": []}
    times = alternate(
        args.rounds,
        preset=lambda: graph_run(PRESET, work, outputs["preset"]),
        change=lambda: graph_run(variant, work, outputs["change"]),
    )
    for name, lines in outputs.items():
        print(f"{name:>24}: {'; '.join(lines)}")
    print(f"change: {change}; data folders under {work}")
    report({"change": times["change"], "preset": times["preset"]}, "preset", "none: a price")


if __name__ == "__main__":
    main()
