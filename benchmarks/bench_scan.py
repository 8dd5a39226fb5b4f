"""Fingerprinting an image tree (stat only) against `find -printf '%s %T@ %p\\n'`, side by side.

    .venv/bin/python benchmarks/bench_scan.py [--files 100000] [--runs 7]

Goal: the fingerprint costs at most 1.5x `find` on the same tree (warm page cache for both).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, make_tiny_tree, report

from oct_assets.dataset.scan import scan_tree, tree_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "oct_bench_tree")
    args = parser.parse_args()
    root = make_tiny_tree(args.tree / f"OCT2017-{args.files}", args.files)
    n = sum(1 for _ in root.rglob("*.jpeg"))
    print(f"tree: {root} ({n} files)")

    def find() -> None:
        subprocess.run(
            ["find", str(root), "-printf", "%s %T@ %p\\n"], stdout=subprocess.DEVNULL, check=True
        )

    times = alternate(
        args.runs,
        tree_fingerprint=lambda: tree_fingerprint(root),
        find=find,
    )
    report(times, "find", "<= 1.5")
    times = alternate(max(3, args.runs // 2), scan_tree=lambda: scan_tree(root), find=find)
    report(times, "find", "informational: the full manifest of raw_oct_images")


if __name__ == "__main__":
    main()
