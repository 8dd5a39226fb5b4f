"""Loading the Dagster definitions against importing bare dagster, side by side.

    .venv/bin/python benchmarks/bench_definitions_load.py [--runs 9]

Goal: `import oct_assets.definitions` costs at most 1.3x `import dagster` (no torch at load).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, report


def python(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    python("import sys, oct_assets.definitions; assert 'torch' not in sys.modules")
    print("torch is not imported when the definitions load")
    times = alternate(
        args.runs,
        definitions=lambda: python("import oct_assets.definitions"),
        dagster=lambda: python("import dagster"),
    )
    report(times, "dagster", "<= 1.3")


if __name__ == "__main__":
    main()
