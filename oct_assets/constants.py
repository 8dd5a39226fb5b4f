"""Names, patterns and default locations shared by every module (no Dagster, no torch)."""

from __future__ import annotations

import os
import re
from pathlib import Path

CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpeg", ".jpg")

# Kermany OCT2017 file names: <CLASS>-<patient>-<n>.jpeg, e.g. CNV-1083927-1.jpeg.
FILENAME_RE = re.compile(r"^(?P<label>[A-Z]+)-(?P<patient>\d+)-(?P<n>\d+)\.jpe?g$", re.IGNORECASE)

ENV_DATA_DIR = "OCT_DATA_DIR"
ENV_IMAGES_DIR = "OCT_IMAGES_DIR"

# Written at the root of a generated dataset so every scan can say the data is synthetic.
SYNTHETIC_MARKER = "SYNTHETIC.txt"
# Written last into every salted output folder: a folder without it is not complete.
MANIFEST_NAME = "manifest.json"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Root of all outputs: `$OCT_DATA_DIR`, else `data/` of the project."""
    return Path(os.environ.get(ENV_DATA_DIR) or PROJECT_ROOT / "data").resolve()


def images_dir() -> Path:
    """Image root: `$OCT_IMAGES_DIR`, else `$OCT_DATA_DIR/OCT2017`."""
    explicit = os.environ.get(ENV_IMAGES_DIR)
    return Path(explicit).expanduser().resolve() if explicit else data_dir() / "OCT2017"


def images_dir_is_explicit() -> bool:
    """True when the user named an image root: then it is never replaced by synthetic data."""
    return bool(os.environ.get(ENV_IMAGES_DIR))
