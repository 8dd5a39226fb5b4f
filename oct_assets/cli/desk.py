"""The desk commands, no Dagster (not even imported): `python -m oct_assets champion` and
`python -m oct_assets predict SCAN [SCAN ...] [--cam OUT.png]`.

Both read the current champion from `$OCT_DATA_DIR/champion_model/current.json` (written when
`champion_model` is materialised); torch is imported only by `predict`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from oct_assets.contracts.assets import CHAMPION_MODEL
from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.paths import data_dir
from oct_assets.serving.card import lineage
from oct_assets.serving.champion import read_current

COMMANDS = ("champion", "predict")


def _champion(err: TextIO) -> tuple[Path, dict[str, Any]] | None:
    found = read_current(data_dir() / CHAMPION_MODEL)
    if found is None:
        print(
            f"no champion under {data_dir() / CHAMPION_MODEL}: materialise it first, e.g. "
            "`dagster asset materialize -m oct_assets.definitions --select champion_model`",
            file=err,
        )
    return found


def champion(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the champion, its scores and its lineage (model -> sample -> images)."""
    found = _champion(err)
    if found is None:
        return 1
    folder, info = found
    m = info["model"]
    print(f"champion:  {m['model_asset']} {m['model_salt']}  ({folder})", file=out)
    print(f"model:     {data_dir() / m['model_dir']}", file=out)
    print(
        f"scores:    accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} on the test "
        f"split of sample {m['sample_salt']} ({m['evaluation_asset']} {m['evaluation_salt']})",
        file=out,
    )
    print(f"rule:      {json.dumps(info['rule'], sort_keys=True)}", file=out)
    print("lineage:", file=out)
    for s in lineage(data_dir(), m):
        facts = {k: v for k, v in s.items() if k not in ("asset", "salt", "code_version")}
        version = "folder missing" if s.get("missing") else f"code version {s['code_version']}"
        print(f"  {s['asset']:<20} {s['salt']}  {version}", file=out)
        for key, value in facts.items():
            if key != "missing" and value not in (None, {}):
                print(f"      {key}: {json.dumps(value, sort_keys=True)}", file=out)
    for reason in info.get("reasons", []):
        print(f"why:       {reason}", file=out)
    return 0


def _cam_paths(cam: Path, n: int) -> list[Path]:
    """One overlay path per scan: `cam` itself for one scan, else `<stem>-<i><suffix>`."""
    if n == 1:
        return [cam]
    return [cam.with_name(f"{cam.stem}-{i}{cam.suffix or '.png'}") for i in range(1, n + 1)]


def predict(
    scans: list[Path], cam: Path | None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Print the class and probabilities of each scan by the champion; 1 if any was refused."""
    found = _champion(err)
    if found is None:
        return 1
    from oct_assets.serving.score import overlay_png, score_files

    model = found[1]["model"]
    model_dir = data_dir() / model["model_dir"]
    classes = ModelInfo.read(model_dir).classes
    scores = score_files(model_dir, scans, cams=cam is not None)
    cams = _cam_paths(cam, len(scans)) if cam is not None else [None] * len(scans)
    print(f"champion {model['model_asset']} {model['model_salt']}", file=out)
    failed = 0
    for path, s, cam_path in zip(scans, scores, cams, strict=True):
        if s.probabilities is None:
            print(f"{path}: not scored: {s.reason}", file=out)
            failed += 1
            continue
        probs = "  ".join(f"{c} {p:.4f}" for c, p in zip(classes, s.probabilities, strict=True))
        line = f"{path}: {s.predicted}  ({probs})"
        if cam_path is not None:
            cam_path.parent.mkdir(parents=True, exist_ok=True)
            cam_path.write_bytes(overlay_png(s))
            line += f"  CAM: {cam_path}"
        print(line, file=out)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    """Dispatch `champion` / `predict` (called by `python -m oct_assets`)."""
    parser = argparse.ArgumentParser(prog="python -m oct_assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("champion", help="print the champion, its scores and lineage")
    p = sub.add_parser("predict", help="diagnose scans with the champion")
    p.add_argument("scans", nargs="+", type=Path, metavar="SCAN")
    p.add_argument("--cam", type=Path, help="write the CAM overlay PNG here")
    args = parser.parse_args(argv)
    try:
        if args.command == "champion":
            return champion()
        return predict(args.scans, args.cam)
    except OctMLError as exc:  # a damaged pointer or model folder: its message names the file
        print(f"oct_assets: {exc}", file=sys.stderr)
        return 2
