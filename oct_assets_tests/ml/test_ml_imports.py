"""The ML core runs on cluster nodes from what a job ships (`cluster/code.py`), without Dagster."""

import shutil
import subprocess
import sys

from oct_assets.cluster.code import PACKAGE, ml_code_files

IMPORT_ALL = """
import importlib, pathlib, sys
root = pathlib.Path(sys.argv[1])
# As on a node: only the shipped folder, not this checkout's editable install.
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path = [str(root)] + [p for p in sys.path if "__editable__" not in p]
names = sorted(p.stem for p in (root / "oct_assets" / "ml").glob("*.py") if p.stem != "__init__")
for name in names:
    module = importlib.import_module(f"oct_assets.ml.{name}")
    assert str(module.__file__).startswith(str(root)), module.__file__
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("dagster", "paramiko"))
print(len(names), leaked)
"""


def test_what_a_job_ships_imports_every_ml_module(tmp_path):
    """Copy the shipped files to an empty folder and import every `ml` module from there alone:
    a new import from `ml` into any package but `contracts` fails here, not on a node."""
    for f in ml_code_files():
        target = tmp_path / "oct_assets" / f.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    count = len(list((PACKAGE / "ml").glob("*.py"))) - 1
    assert out.stdout.split(maxsplit=1) == [str(count), "[]\n"]


def test_train_entry_point_and_config_do_not_import_torch():
    # Spawned decode workers re-import the `-m oct_assets.ml.train` main module, and the
    # Dagster definitions import the config: both must stay light.
    code = "import sys, oct_assets.ml.train, oct_assets.ml.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
