"""Import hygiene of the ML core: it runs on cluster nodes without Dagster."""

import ast
import subprocess
import sys
from pathlib import Path

ML = Path(__file__).resolve().parents[2] / "oct_assets" / "ml"


def test_ml_core_never_imports_dagster():
    offenders = []
    for path in sorted(ML.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "dagster"]
    assert offenders == []


def test_train_entry_point_and_config_do_not_import_torch():
    # Spawned decode workers re-import the `-m oct_assets.ml.train` main module, and the
    # Dagster definitions import the config: both must stay light.
    code = "import sys, oct_assets.ml.train, oct_assets.ml.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
